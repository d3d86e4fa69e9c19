// impersonator-express: the customer app's side of impersonator as Express
// middleware, with the semantics of the Go package appsession.
//
// A request is impersonated only when both hold:
//  1. its session cookie verifies against the service's JWKS with the
//     service's own checks (EdDSA or ES256 of the key named by kid, typ
//     impersonation-session+jwt, iss, aud, exp, iat, jti, one spelling);
//  2. the service confirmed the session live (GET /impersonation/session
//     with the cookie, 200) at most maxAgeMs before the decision.
// Every end the service knows of (logout, revocation, idle timeout, cap,
// policy reload) is a 401 there, so the app stops impersonating at most
// maxAgeMs (default 2000, at most 4000) after it. When it cannot tell
// (service stopped, hung, failing, JWKS unreachable), the request is not
// impersonated: it is the browser's own, never the customer's.

import { Buffer } from 'node:buffer';
import { createRemoteJWKSet, jwtVerify } from 'jose';

export const DEFAULT_MAX_AGE_MS = 2000;
export const MAX_MAX_AGE_MS = 4000; // the end-detection bound stays under 5 s
export const DEFAULT_TIMEOUT_MS = 1000;
export const JWKS_COOLDOWN_MS = 10000; // least time between refetches for an unknown kid
export const JWKS_MAX_AGE_MS = 600000;

const MAX_TOKEN_BYTES = 4096;
const MAX_ANSWER_BYTES = 64 * 1024;
const MAX_CACHED = 10000;
const MAX_SESSION_TTL_S = 24 * 3600;
const LEEWAY_S = 5;
const TYP = 'impersonation-session+jwt';
const FORBIDDEN_HEADERS = ['crit', 'jku', 'x5u', 'jwk', 'x5c', 'x5t', 'x5t#S256'];
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'];
// P-256's order N, halved: a canonical (low-s) ES256 signature has s <= N/2.
const P256_HALF_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n >> 1n;

/** The session cookie's name for the service's public URL, as it sets it. */
export function cookieName(publicUrl) {
  return String(publicUrl).startsWith('https://') ? '__Host-impersonation_session' : 'impersonation_session';
}

/** Whether a request may change something: a method other than GET, HEAD and
 * OPTIONS, or a method-override header naming one. */
export function isChange(req) {
  if (!SAFE_METHODS.has(req.method)) return true;
  for (const h of OVERRIDE_HEADERS) {
    const v = req.headers[h];
    if (v === undefined) continue;
    for (const m of [].concat(v).join(',').split(',')) {
      if (!SAFE_METHODS.has(m.trim())) return true;
    }
  }
  return false;
}

function httpUrl(s) {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.host !== '';
  } catch {
    return false;
  }
}

/**
 * impersonation(options) returns the middleware. It sets req.impersonation
 * to null or { sessionId, subject, collection, actor: { id, email }, scope,
 * readOnly, reason, startedAt, expiresAt }, and answers a change under a
 * read-only impersonation with options.onReadOnly (default: 403).
 *
 * options: publicUrl (IMPERSONATOR_PUBLIC_URL, required), audience
 * (IMPERSONATOR_AUDIENCE, required), serviceUrl (where the app reaches
 * impersonator; publicUrl by default), maxAgeMs, timeoutMs, onReadOnly
 * (req, res), logger ({ warn, debug }).
 */
export function impersonation(options = {}) {
  const problems = [];
  const iss = String(options.publicUrl ?? '').replace(/\/+$/, '');
  if (!httpUrl(iss)) problems.push(`publicUrl ${JSON.stringify(options.publicUrl)} is not an http(s) URL`);
  const audience = options.audience;
  if (!audience) problems.push('audience is required (the service\'s IMPERSONATOR_AUDIENCE, by default its IMPERSONATOR_APP_URL)');
  let service = String(options.serviceUrl ?? '').replace(/\/+$/, '');
  if (service === '') service = iss;
  else if (!httpUrl(service)) problems.push(`serviceUrl ${JSON.stringify(options.serviceUrl)} is not an http(s) URL`);
  const maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
  const timeoutMs = options.timeoutMs ?? Math.min(DEFAULT_TIMEOUT_MS, maxAgeMs / 2);
  if (!(maxAgeMs > 0 && maxAgeMs <= MAX_MAX_AGE_MS)) problems.push(`maxAgeMs ${maxAgeMs} is outside (0, ${MAX_MAX_AGE_MS}]`);
  if (!(timeoutMs > 0 && timeoutMs < maxAgeMs)) problems.push(`timeoutMs ${timeoutMs} must be positive and shorter than maxAgeMs ${maxAgeMs}`);
  if (problems.length) throw new Error('impersonator-express: ' + problems.join('; '));

  const name = cookieName(iss);
  const sessionUrl = service + '/impersonation/session';
  const logger = options.logger ?? { warn: (...a) => console.warn(...a), debug: () => {} };
  const onReadOnly = options.onReadOnly ?? ((req, res) => {
    res.status(403).type('text/plain').send('read-only impersonation: changes are not allowed\n');
  });
  const jwks = createRemoteJWKSet(new URL(service + '/.well-known/jwks.json'), {
    timeoutDuration: timeoutMs, cooldownDuration: JWKS_COOLDOWN_MS, cacheMaxAge: JWKS_MAX_AGE_MS,
  });
  const answers = new Map(); // sid -> { done, requested, until, state, imp }

  async function verify(raw) {
    if (raw.length > MAX_TOKEN_BYTES) throw new Error('token too large');
    const parts = raw.split('.');
    if (parts.length !== 3) throw new Error('malformed token');
    for (const p of parts) {
      // One spelling: base64url without padding, and canonical (no stray
      // bits in the last character), as the service decodes.
      if (!/^[A-Za-z0-9_-]*$/.test(p) || Buffer.from(p, 'base64url').toString('base64url') !== p) {
        throw new Error('malformed token: non-canonical base64url');
      }
    }
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    for (const h of FORBIDDEN_HEADERS) {
      if (Object.hasOwn(header, h)) throw new Error(`forbidden header ${h}`);
    }
    if (header.alg === 'ES256') {
      const sig = Buffer.from(parts[2], 'base64url');
      if (sig.length !== 64 || BigInt('0x' + sig.subarray(32).toString('hex')) > P256_HALF_N) {
        throw new Error('non-canonical ECDSA signature');
      }
    }
    const { payload } = await jwtVerify(raw, jwks, {
      algorithms: ['EdDSA', 'ES256'], typ: TYP, issuer: iss, audience,
      requiredClaims: ['exp', 'iat', 'sub', 'sid', 'jti'], clockTolerance: LEEWAY_S,
    });
    const { sub, sid, jti, iat, exp, act, scope } = payload;
    if (typeof sub !== 'string' || sub === '') throw new Error('missing sub');
    if (typeof sid !== 'string' || sid === '') throw new Error('missing sid');
    if (!act || typeof act.sub !== 'string' || act.sub === '') throw new Error('missing act.sub');
    if (!(exp > iat) || exp - iat > MAX_SESSION_TTL_S) throw new Error('bad lifetime');
    if (scope !== undefined && scope !== 'read' && scope !== 'full') throw new Error('bad scope');
    if (typeof jti !== 'string' || !/^[A-Za-z0-9_-]+$/.test(jti) || Buffer.from(jti, 'base64url').length < 16) {
      throw new Error('missing or short jti');
    }
    return payload;
  }

  async function introspect(raw) {
    const res = await fetch(sessionUrl, {
      headers: { cookie: `${name}=${raw}`, accept: 'application/json' },
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (res.status !== 200) {
      await res.body?.cancel();
      return { status: res.status };
    }
    const text = await res.text();
    if (text.length > MAX_ANSWER_BYTES) throw new Error('session answer too large');
    return { status: 200, body: JSON.parse(text) };
  }

  async function ask(a, claims, raw) {
    a.until = a.requested + maxAgeMs;
    try {
      const { status, body } = await introspect(raw);
      if (status === 200) {
        if (body.session_id !== claims.sid || body.subject !== claims.sub || body.actor?.id !== claims.act.sub) {
          logger.warn('impersonation: the service answered for another session; not impersonating', { sid: claims.sid });
          return;
        }
        // What is not full is read-only; the stricter of cookie and answer.
        const scope = body.scope === 'full' && claims.scope !== 'read' ? 'full' : 'read';
        a.state = 'alive';
        a.imp = Object.freeze({
          sessionId: body.session_id, subject: body.subject, collection: body.collection,
          actor: Object.freeze({ id: body.actor.id, email: body.actor.email }),
          scope, readOnly: scope === 'read', reason: body.reason,
          startedAt: body.started_at ? new Date(body.started_at) : null,
          expiresAt: body.expires_at ? new Date(body.expires_at) : null,
        });
      } else if (status === 401) {
        a.state = 'ended'; // an ended session never comes back: kept until the cookie expires
        a.until = Math.max(a.until, a.requested + (claims.exp + LEEWAY_S) * 1000 - Date.now());
      } else {
        logger.warn('impersonation: the session check failed; not impersonating', { sid: claims.sid, status });
      }
    } catch (err) {
      logger.warn('impersonation: the session check failed; not impersonating', { sid: claims.sid, error: String(err?.message ?? err) });
    }
  }

  function store(sid, a) {
    if (answers.size >= MAX_CACHED) {
      const now = performance.now();
      for (const [k, old] of answers) if (old.finished && now >= old.until) answers.delete(k);
      if (answers.size >= MAX_CACHED) for (const [k, old] of answers) if (old.finished) answers.delete(k);
    }
    answers.set(sid, a);
  }

  async function live(claims, raw) {
    let a = answers.get(claims.sid);
    if (!a || (a.finished && performance.now() >= a.until)) {
      a = { requested: performance.now(), until: 0, state: 'unknown', imp: null, finished: false };
      a.done = ask(a, claims, raw).finally(() => { a.finished = true; });
      store(claims.sid, a);
    }
    await a.done;
    // The bound, checked at the decision: the confirmation was requested at
    // most maxAgeMs ago, so the service gave it at most maxAgeMs ago.
    if (a.state !== 'alive' || performance.now() - a.requested > maxAgeMs) return null;
    return a.imp;
  }

  async function check(req) {
    const raw = readCookie(req.headers.cookie, name);
    if (!raw) return null;
    let claims;
    try {
      claims = await verify(raw);
    } catch (err) {
      logger.debug('impersonation cookie refused', { error: String(err?.code ?? err?.message ?? err) });
      return null;
    }
    return live(claims, raw);
  }

  return async function impersonationMiddleware(req, res, next) {
    let imp = null;
    try {
      imp = await check(req);
    } catch (err) {
      logger.warn('impersonation: check failed; not impersonating', { error: String(err?.message ?? err) });
    }
    req.impersonation = imp;
    if (imp && imp.readOnly && isChange(req)) {
      onReadOnly(req, res);
      return;
    }
    next();
  };
}

/** The first cookie named name in a Cookie header, as Go's r.Cookie reads it. */
function readCookie(header, name) {
  if (typeof header !== 'string') return null;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    if (part.slice(0, i).trim() === name) {
      let v = part.slice(i + 1).trim();
      if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
      return v || null;
    }
  }
  return null;
}
