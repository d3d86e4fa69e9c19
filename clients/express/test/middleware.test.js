// The Express middleware in a customer app against the real service (built
// from this repository), as README "The customer app: seeing the session"
// describes it.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import express from 'express';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, importPKCS8 } from 'jose';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { impersonation, cookieName, DEFAULT_MAX_AGE_MS, DEFAULT_TIMEOUT_MS } from '../index.js';
import { binary, cli, impersonate, sid, signingKeyPEM, startService } from './harness.js';

const AUDIENCE = 'http://localhost:3000'; // the service's default IMPERSONATOR_APP_URL

/** A customer app behind mw: its handler answers what it saw. */
async function startApp(t, mw) {
  const app = express();
  const seen = { calls: 0 };
  app.use(mw);
  app.use((req, res) => {
    seen.calls++;
    const i = req.impersonation;
    res.json(i ? {
      impersonating: true, sessionId: i.sessionId, subject: i.subject, collection: i.collection,
      actor: i.actor.email, actorId: i.actor.id, scope: i.scope, reason: i.reason, expires: i.expiresAt instanceof Date,
    } : { impersonating: false });
  });
  const server = await new Promise((resolve) => { const s = app.listen(0, '127.0.0.1', () => resolve(s)); });
  t.after(() => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }));
  seen.url = `http://127.0.0.1:${server.address().port}`;
  seen.request = async (method, cookie, headers = {}) => {
    const h = { cookie: 'app_session=own-login', ...headers };
    if (cookie) h.cookie += `; ${cookie.name}=${cookie.value}`;
    const start = performance.now();
    const res = await fetch(`${seen.url}/account`, { method, headers: h, body: ['GET', 'HEAD'].includes(method) ? undefined : 'a=1' });
    const took = performance.now() - start;
    const text = await res.text();
    return { status: res.status, body: res.status === 200 && method !== 'HEAD' ? JSON.parse(text) : null, took };
  };
  return seen;
}

function logger() {
  const lines = [];
  return { lines, warn: (m, f) => lines.push(m + ' ' + JSON.stringify(f)), debug: (m, f) => lines.push(m + ' ' + JSON.stringify(f)) };
}

/** Sends GETs every 20 ms until one is not impersonated; returns when the
 * last impersonated one was sent and when the first other one was answered,
 * each in ms after since. */
async function untilNotImpersonating(app, cookie, since) {
  let last = 0;
  for (;;) {
    const sent = performance.now();
    const { body } = await app.request('GET', cookie);
    if (!body.impersonating) return { last, first: performance.now() - since };
    last = sent - since;
    assert.ok(performance.now() - since < 10000, 'still impersonating 10 s later');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('the Express middleware against the real service', async (t) => {
  const bin = await binary(t);
  const svc = await startService(t, bin);
  const log = logger();
  const options = { publicUrl: svc.env.IMPERSONATOR_PUBLIC_URL, audience: AUDIENCE, serviceUrl: svc.url, logger: log };
  const app = await startApp(t, impersonation(options));
  const cookies = [];
  const session = async (id, access) => {
    const c = await impersonate(bin, svc, id, access);
    cookies.push(c);
    return c;
  };

  await t.test('no cookie: not impersonating, every method reaches the app (the old snippet answered 500)', async () => {
    for (const m of ['GET', 'POST', 'DELETE']) {
      const before = app.calls;
      const { status, body } = await app.request(m, null);
      assert.equal(status, 200, m);
      assert.equal(body.impersonating, false, m);
      assert.equal(app.calls, before + 1, m);
    }
  });

  await t.test('full access: req.impersonation, changes allowed', async () => {
    const c = await session('42', 'Full access');
    assert.equal(c.name, 'impersonation_session');
    const { status, body } = await app.request('GET', c);
    assert.equal(status, 200);
    assert.deepEqual(body, {
      impersonating: true, sessionId: sid(c), subject: '42', collection: 'users', actor: 'ada@example.com',
      actorId: '1001', scope: 'full', reason: 'ticket 2121: the Express middleware test', expires: true,
    });
    const post = await app.request('POST', c);
    assert.equal(post.status, 200);
    assert.equal(post.body.impersonating, true);
  });

  await t.test('read only: reads impersonated, changes 403 before the app', async (t) => {
    const c = await session('43', 'Read only');
    for (const m of ['GET', 'OPTIONS']) {
      const { status, body } = await app.request(m, c);
      assert.equal(status, 200, m);
      assert.equal(body.impersonating && body.scope === 'read' && body.subject === '43', true, m);
    }
    assert.equal((await app.request('HEAD', c)).status, 200);
    const changes = [['POST'], ['PUT'], ['PATCH'], ['DELETE'],
      ['GET', { 'x-http-method-override': 'DELETE' }], ['GET', { 'x-http-method': 'PUT' }], ['GET', { 'x-method-override': 'post' }]];
    for (const [m, h] of changes) {
      const before = app.calls;
      const { status } = await app.request(m, c, h);
      assert.equal(status, 403, `${m} ${JSON.stringify(h)}`);
      assert.equal(app.calls, before, `${m} ${JSON.stringify(h)} reached the app`);
    }
    const teapot = await startApp(t, impersonation({ ...options, onReadOnly: (req, res) => res.status(418).send(req.impersonation.subject) }));
    const custom = await fetch(`${teapot.url}/account`, { method: 'POST', headers: { cookie: `${c.name}=${c.value}` } });
    assert.equal(custom.status, 418, 'onReadOnly answers');
    assert.equal(await custom.text(), '43');
    const own = await app.request('POST', null);
    assert.equal(own.status, 200);
    assert.equal(own.body.impersonating, false);
  });

  await t.test('a cookie that does not verify: not impersonating', async () => {
    const live = await session('44');
    const jwks = await (await fetch(`${svc.url}/.well-known/jwks.json`)).json();
    const kid = jwks.keys[0].kid;
    const serviceKey = await importPKCS8(await signingKeyPEM(svc), 'EdDSA');
    const { privateKey: otherKey } = await generateKeyPair('EdDSA');
    const now = Math.floor(Date.now() / 1000);
    const sign = (key, { typ = 'impersonation-session+jwt', iss = svc.env.IMPERSONATOR_PUBLIC_URL, aud = AUDIENCE, iat = now, exp = now + 3600, sidValue = sid(live) } = {}) =>
      new SignJWT({ sub: '44', act: { sub: '1001', email: 'ada@example.com' }, collection: 'users', sid: sidValue, scope: 'full', jti: randomBytes(16).toString('base64url') })
        .setProtectedHeader({ alg: 'EdDSA', typ, kid }).setIssuer(iss).setAudience(aud).setIssuedAt(iat).setExpirationTime(exp).sign(key);
    const [h, p, s] = live.value.split('.');
    const flipped = s.slice(0, -1) + String.fromCharCode(s.charCodeAt(s.length - 1) ^ 1); // same bytes, another spelling
    const cases = {
      garbage: 'not-a-jwt',
      'signed by another key under the service\'s kid': await sign(otherKey),
      'expired, signed by the service\'s own key': await sign(serviceKey, { iat: now - 7200, exp: now - 3600 }),
      'wrong issuer': await sign(serviceKey, { iss: 'http://evil.example' }),
      'wrong audience': await sign(serviceKey, { aud: 'http://other-app.example' }),
      'an impersonation token instead of a session': await sign(serviceKey, { typ: 'impersonation+jwt' }),
      'altered claims': `${h}.${Buffer.from('{"sub":"1"}').toString('base64url')}.${s}`,
      'alg none': `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'impersonation-session+jwt', kid })).toString('base64url')}.${p}.`,
      'the live cookie in another base64url spelling': `${h}.${p}.${flipped}`,
      'signed by the service\'s key, valid, but no such session': await sign(serviceKey, { sidValue: randomBytes(16).toString('base64url') }),
    };
    for (const [name, value] of Object.entries(cases)) {
      const { status, body } = await app.request('GET', { name: 'impersonation_session', value });
      assert.equal(status, 200, name);
      assert.equal(body.impersonating, false, name);
    }
    const hostName = await app.request('GET', { name: '__Host-impersonation_session', value: live.value });
    assert.equal(hostName.body.impersonating, false, 'the __Host- name under an http public URL');
    const control = await app.request('GET', live);
    assert.equal(control.body.impersonating, true, 'control: the live cookie impersonates');
  });

  const ends = {
    'impersonator sessions revoke': async (c) => {
      const out = await cli(bin, svc, 'sessions', 'revoke', sid(c));
      assert.match(out, /revoked/);
    },
    logout: async (c) => {
      const res = await fetch(`${svc.url}/impersonation/logout`, { method: 'POST', headers: { cookie: `${c.name}=${c.value}` } });
      assert.equal(res.status, 204);
    },
  };
  for (const [name, end] of Object.entries(ends)) {
    await t.test(`ends within the bound: ${name}`, async (t) => {
      const c = await session('45');
      assert.equal((await app.request('GET', c)).body.impersonating, true, 'before the end');
      await end(c);
      const { last, first } = await untilNotImpersonating(app, c, performance.now());
      t.diagnostic(`${name}: last impersonated request sent ${Math.round(last)} ms after the end, first refused answered ${Math.round(first)} ms after it`);
      // The service learns of the CLI's revocation through Redis pub/sub,
      // milliseconds later: an answer it gave in between is the only slack.
      const propagationMs = 250;
      assert.ok(last <= DEFAULT_MAX_AGE_MS + propagationMs, `impersonated a request sent ${last} ms after the end`);
      assert.ok(first < 5000);
      assert.equal((await app.request('GET', c)).body.impersonating, false, 'impersonating again');
    });
  }

  await t.test('service stopped or hung: never impersonates', async (t) => {
    const c = await session('46', 'Read only');
    assert.equal((await app.request('GET', c)).body.impersonating, true, 'before the stop');
    await svc.stop();
    const { last, first } = await untilNotImpersonating(app, c, performance.now());
    t.diagnostic(`service stopped: last impersonated request sent ${Math.round(last)} ms after the stop, first refused answered ${Math.round(first)} ms after it`);
    assert.ok(last <= DEFAULT_MAX_AGE_MS, `impersonated a request sent ${last} ms after the stop`);
    const post = await app.request('POST', c);
    assert.equal(post.status, 200, 'a change with the service stopped is the browser\'s own');
    assert.equal(post.body.impersonating, false);
    const fresh = await startApp(t, impersonation(options));
    const f = await fresh.request('GET', c);
    assert.equal(f.status, 200);
    assert.equal(f.body.impersonating, false, 'a fresh app with the service stopped');

    // A service that accepts connections and never answers.
    const held = [];
    const hung = net.createServer((sock) => held.push(sock));
    await new Promise((resolve, reject) => { hung.once('error', reject); hung.listen(svc.port, '127.0.0.1', resolve); });
    t.after(() => { held.forEach((s) => s.destroy()); hung.close(); });
    await new Promise((r) => setTimeout(r, DEFAULT_MAX_AGE_MS)); // the failure answers above expire
    for (const a of [app, fresh]) {
      const { status, body, took } = await a.request('GET', c);
      t.diagnostic(`service hung: a request with the cookie took ${Math.round(took)} ms`);
      assert.equal(status, 200);
      assert.equal(body.impersonating, false);
      assert.ok(took < DEFAULT_TIMEOUT_MS + 1000, `took ${took} ms`);
    }
  });

  const text = log.lines.join('\n');
  for (const c of cookies) {
    assert.ok(!text.includes(c.value) && !text.includes(c.value.split('.')[2]), 'a session cookie reached the log');
  }
  assert.match(text, /"sid":/);
  assert.match(text, /cookie refused/);
});

test('the cookie name follows the public URL: __Host- under https', async (t) => {
  const bin = await binary(t);
  const publicUrl = 'https://app.example.test';
  const svc = await startService(t, bin, { IMPERSONATOR_PUBLIC_URL: publicUrl });
  const app = await startApp(t, impersonation({ publicUrl, audience: AUDIENCE, serviceUrl: svc.url, logger: logger() }));
  const c = await impersonate(bin, svc, '42');
  assert.equal(c.name, '__Host-impersonation_session');
  assert.equal(cookieName(publicUrl), c.name);
  assert.equal((await app.request('GET', c)).body.impersonating, true);
  const plain = await app.request('GET', { name: 'impersonation_session', value: c.value });
  assert.equal(plain.body.impersonating, false, 'the unprefixed name under an https public URL');
});

test('bad options are refused, every problem at once', () => {
  assert.throws(() => impersonation({ publicUrl: 'app.example.com', serviceUrl: 'ftp://x', maxAgeMs: 5000, timeoutMs: 6000 }),
    (err) => ['publicUrl', 'audience', 'serviceUrl', 'maxAgeMs', 'timeoutMs'].every((w) => err.message.includes(w)));
  assert.doesNotThrow(() => impersonation({ publicUrl: 'https://app.example.com/', audience: 'https://app.example.com' }));
});

test('service calls: none without a cookie, one per session however concurrent, an ended answer kept, unknown kids within the cooldown fetch nothing', async (t) => {
  const { publicKey, privateKey } = await generateKeyPair('EdDSA');
  const jwk = await exportJWK(publicKey);
  jwk.kid = await calculateJwkThumbprint(jwk);
  const { privateKey: unpublished } = await generateKeyPair('EdDSA');
  const calls = { jwks: 0, session: 0 };
  const stub = http.createServer((req, res) => {
    if (req.url === '/.well-known/jwks.json') {
      calls.jwks++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [jwk] }));
      return;
    }
    calls.session++;
    const value = (req.headers.cookie ?? '').split('=')[1] ?? '';
    const claims = JSON.parse(Buffer.from(value.split('.')[1] ?? '', 'base64url').toString() || '{}');
    setTimeout(() => {
      if (claims.sub === 'ended') {
        res.statusCode = 401;
        res.end('{"error":"no_session"}');
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ session_id: claims.sid, subject: claims.sub, collection: 'users', actor: { id: claims.act.sub, email: 'ada@example.com' }, scope: 'full' }));
    }, 50);
  });
  await new Promise((r) => stub.listen(0, '127.0.0.1', r));
  t.after(() => { stub.closeAllConnections(); stub.close(); });
  const publicUrl = `http://127.0.0.1:${stub.address().port}`;
  const app = await startApp(t, impersonation({ publicUrl, audience: AUDIENCE, maxAgeMs: 1000, timeoutMs: 500, logger: logger() }));
  const now = Math.floor(Date.now() / 1000);
  const cookie = async (sub, key = privateKey) => ({
    name: 'impersonation_session',
    value: await new SignJWT({ sub, act: { sub: '1001' }, collection: 'users', sid: randomBytes(16).toString('base64url'), jti: randomBytes(16).toString('base64url') })
      .setProtectedHeader({ alg: 'EdDSA', typ: 'impersonation-session+jwt', kid: jwk.kid })
      .setIssuer(publicUrl).setAudience(AUDIENCE).setIssuedAt(now).setExpirationTime(now + 3600).sign(key),
  });

  await app.request('POST', null);
  assert.deepEqual(calls, { jwks: 0, session: 0 }, 'a request without the cookie asked the service');

  const c = await cookie('42');
  const answers = await Promise.all(Array.from({ length: 30 }, () => app.request('GET', c)));
  assert.ok(answers.every((a) => a.body.impersonating), 'every concurrent request impersonated');
  assert.deepEqual(calls, { jwks: 1, session: 1 }, '30 concurrent requests of one session');

  const ended = await cookie('ended');
  assert.equal((await app.request('GET', ended)).body.impersonating, false);
  const asked = calls.session;
  await new Promise((r) => setTimeout(r, 1100)); // past maxAgeMs
  assert.equal((await app.request('GET', ended)).body.impersonating, false);
  assert.equal(calls.session, asked, 'the ended session was asked again');

  const forged = await cookie('42', unpublished); // the published kid, another key
  const unknownKid = { name: 'impersonation_session', value: (await cookie('42')).value.replace(/^[^.]+/, Buffer.from(JSON.stringify({ alg: 'EdDSA', typ: 'impersonation-session+jwt', kid: 'no-such-kid' })).toString('base64url')) };
  for (let i = 0; i < 25; i++) {
    assert.equal((await app.request('GET', forged)).body.impersonating, false);
    assert.equal((await app.request('GET', unknownKid)).body.impersonating, false);
  }
  assert.equal(calls.jwks, 1, 'forged and unknown kids within the cooldown fetched the JWKS again');
});

test('Redis hung: a session the service checked before, from its memory; another, not impersonating after the timeout', async (t) => {
  const bin = await binary(t);
  const svc = await startService(t, bin, {}, { realRedis: true });
  const app = await startApp(t, impersonation({ publicUrl: svc.env.IMPERSONATOR_PUBLIC_URL, audience: AUDIENCE, serviceUrl: svc.url, logger: logger() }));
  const checked = await impersonate(bin, svc, '48');
  assert.equal((await app.request('GET', checked)).body.impersonating, true, 'before Redis hangs');
  const fresh = await impersonate(bin, svc, '49');
  svc.redis.pause();
  t.after(() => svc.redis.resume());
  await new Promise((r) => setTimeout(r, DEFAULT_MAX_AGE_MS)); // the middleware's own answer expires
  const none = await app.request('GET', null);
  assert.equal(none.body.impersonating, false);
  assert.ok(none.took < 500, `no cookie took ${none.took} ms`);
  const c = await app.request('GET', checked);
  t.diagnostic(`Redis hung, a session the service checked before: impersonating ${c.body.impersonating} after ${Math.round(c.took)} ms`);
  assert.equal(c.body.impersonating, true, 'a session the service checked before');
  assert.ok(c.took < 500, `took ${c.took} ms`);
  const f = await app.request('GET', fresh);
  t.diagnostic(`Redis hung, a session the service did not check before: impersonating ${f.body.impersonating} after ${Math.round(f.took)} ms`);
  assert.equal(f.body.impersonating, false, 'a session the service did not check before');
  assert.ok(f.took < DEFAULT_TIMEOUT_MS + 1000, `took ${f.took} ms`);
});
