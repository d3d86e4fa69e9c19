// The real service for the middleware's tests: the Go binary built from this
// repository (or $IMPERSONATOR_BIN), `impersonator serve` on a free loopback
// port with its embedded Redis and a key it generates, and its CLI.

import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
export const repoRoot = path.resolve(import.meta.dirname, '..', '..', '..');

export async function tempDir(t) {
  const dir = await mkdtemp(path.join(tmpdir(), 'impersonator-express-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The service binary: $IMPERSONATOR_BIN, or built from the repository. */
export async function binary(t) {
  if (process.env.IMPERSONATOR_BIN) return process.env.IMPERSONATOR_BIN;
  const bin = path.join(await tempDir(t), 'impersonator');
  await execFileP('go', ['build', '-o', bin, './cmd/impersonator'], { cwd: repoRoot });
  return bin;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The environment of a service command: none of ours, then vars. */
function environment(vars) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('IMPERSONATOR_') && !k.startsWith('FOREST_') && k !== 'REDIS_URL') env[k] = v;
  }
  return { ...env, ...vars };
}

/**
 * Starts `bin serve` on the embedded Redis with an empty keys folder (the
 * service generates its key), waits for /healthz, and learns the embedded
 * Redis's address from the log (for the CLI). Killed when the test ends.
 */
export async function startService(t, bin, vars = {}, { realRedis = false } = {}) {
  const port = await freePort();
  const addr = `127.0.0.1:${port}`;
  const keysDir = path.join(await tempDir(t), 'keys');
  let redis = null;
  if (realRedis) {
    // A real redis-server (it can be frozen), and a key made with the CLI:
    // with REDIS_URL set, serve generates none.
    redis = await startRedis(t);
    await execFileP(bin, ['keys', 'generate', '--dir', keysDir], { env: environment({}) });
  }
  const env = {
    IMPERSONATOR_LISTEN: addr,
    IMPERSONATOR_PUBLIC_URL: `http://${addr}`,
    IMPERSONATOR_KEYS_DIR: keysDir,
    FOREST_AUTH_SECRET: randomBytes(24).toString('hex') + 'ghijklmnopqrstuv',
    IMPERSONATOR_LOGIN_RATE: '0',
    IMPERSONATOR_LOG_FORMAT: 'json',
    REDIS_URL: redis ? redis.url : '',
    ...vars,
  };
  const proc = spawn(bin, ['serve'], { env: environment(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  const svc = {
    url: `http://${addr}`, addr, port, keysDir, env, log: () => log,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
  t.after(() => svc.stop());
  const deadline = Date.now() + 20000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`impersonator exited at start:\n${log}`);
    try {
      const res = await fetch(`${svc.url}/healthz`);
      await res.body?.cancel();
      if (res.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`impersonator not healthy on ${addr}:\n${log}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  svc.redis = redis;
  if (redis) svc.redisUrl = redis.url;
  for (const line of log.split('\n')) {
    try {
      const rec = JSON.parse(line);
      if (rec.addr && /EMBEDDED/.test(rec.msg)) svc.redisUrl = `redis://${rec.addr}`;
    } catch { /* not a JSON line */ }
  }
  if (!svc.redisUrl) throw new Error(`no embedded Redis address in the log:\n${log}`);
  return svc;
}

/** A redis-server ($REDIS_SERVER, PATH, the Debian path) on a free loopback
 * port with no persistence, killed (thawed first) when the test ends. */
async function startRedis(t) {
  const port = await freePort();
  const bin = process.env.REDIS_SERVER || (await execFileP('sh', ['-c', 'command -v redis-server || echo /usr/bin/redis-server'])).stdout.trim();
  const proc = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  t.after(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGCONT');
      proc.kill('SIGKILL');
    }
    await exited;
  });
  for (let i = 0; ; i++) {
    const up = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => { c.end(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    if (up) break;
    if (proc.exitCode !== null || i > 200) throw new Error(`redis-server (${bin}) did not start`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    pause: () => proc.kill('SIGSTOP'),
    resume: () => proc.kill('SIGCONT'),
  };
}

/** Runs `impersonator ARGS…` against the service's Redis; returns stdout. */
export async function cli(bin, svc, ...args) {
  const { stdout } = await execFileP(bin, args, { env: environment({ ...svc.env, REDIS_URL: svc.redisUrl }) });
  return stdout;
}

/** The service's signing key (PKCS#8 PEM) it generated in its keys folder. */
export async function signingKeyPEM(svc) {
  const pem = (await readdir(svc.keysDir)).filter((f) => f.endsWith('.pem'));
  if (pem.length !== 1) throw new Error(`keys folder holds ${pem.length} keys`);
  return readFile(path.join(svc.keysDir, pem[0]), 'utf8');
}

/** Mints as the Forest UI (a JWT from `impersonator dev forest-jwt`) and logs
 * in as the admin panel's webhook; returns the session cookie. */
export async function impersonate(bin, svc, id, access) {
  const forest = (await cli(bin, svc, 'dev', 'forest-jwt', '--email', 'ada@example.com')).trim();
  const values = { Reason: 'ticket 2121: the Express middleware test' };
  if (access) values.Access = access;
  const minted = await fetch(`${svc.url}/forest/actions/impersonate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${forest}`, 'content-type': 'application/json' },
    body: JSON.stringify({ data: { type: 'custom-action-requests', attributes: {
      collection_name: 'users', ids: [id], values, smart_action_id: 'users-impersonate',
    } } }),
  });
  const answer = await minted.json();
  if (minted.status !== 200) throw new Error(`mint: ${minted.status} ${JSON.stringify(answer)}`);
  const login = await fetch(`${svc.url}/impersonation/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: answer.webhook.body.token }),
  });
  await login.body?.cancel();
  if (login.status !== 200) throw new Error(`login: ${login.status}`);
  for (const c of login.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    if (pair.slice(0, i).endsWith('impersonation_session')) return { name: pair.slice(0, i), value: pair.slice(i + 1) };
  }
  throw new Error('login set no session cookie');
}

/** The session id a session cookie names (read, not verified). */
export function sid(cookie) {
  return JSON.parse(Buffer.from(cookie.value.split('.')[1], 'base64url').toString()).sid;
}
