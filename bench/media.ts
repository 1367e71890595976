/**
 * Media throughput and memory: `npm run bench:media -- [--mb 50] [--clients 20]`.
 *
 * Starts one server process on PGlite, uploads a file of `--mb` MiB (random bytes, streamed from
 * disk), downloads it once, then has `--clients` clients download it at the same time, and prints
 * the upload and download throughput and the server's resident memory (RSS, from /proc) before
 * and at its peak during the concurrent downloads. Streaming shows as a peak that stays far
 * below clients x file size. The clients run on the same machine as the server.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { api, startServers } from './common.ts';

const { values } = parseArgs({
  options: { mb: { type: 'string', default: '50' }, clients: { type: 'string', default: '20' } },
});
const MB = Number(values.mb);
const CLIENTS = Number(values.clients);
const BYTES = MB * 1024 * 1024;

/** VmRSS (now) or VmHWM (the peak since the process started), in MiB. */
function rssMiB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1]) / 1024;
}

/** Downloads the URL, hashing what arrives; returns the digest and the bytes. */
async function download(url: string, token: string): Promise<{ sha256: string; bytes: number }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200 || !res.body) throw new Error(`download: ${res.status}`);
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

const mibPerSecond = (bytes: number, ms: number) => (bytes / 1024 / 1024 / (ms / 1000)).toFixed(1);

async function main(): Promise<void> {
  const servers = await startServers('embedded', {
    CONCLAVE_MAX_UPLOAD_BYTES: String(BYTES + 1024),
    CONCLAVE_RATE_LIMITS: 'off',
  });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'conclave-bench-media-'));
  try {
    const base = servers.bases[0]!;
    const pid = servers.pids[0]!;
    const user = await api(base, 'POST', '/_matrix/client/v3/register', undefined, {
      username: 'bench',
      password: 'bench password 1234',
      auth: { type: 'm.login.dummy' },
    });
    const token = user.access_token as string;
    const file = path.join(dir, 'payload.bin');
    const payload = randomBytes(BYTES);
    writeFileSync(file, payload);
    const expected = createHash('sha256').update(payload).digest('hex');
    const idleRss = rssMiB(pid);

    let started = performance.now();
    const res = await fetch(`${base}/_matrix/media/v3/upload?filename=payload.bin`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/octet-stream',
        'content-length': String(BYTES),
      },
      body: Readable.toWeb(createReadStream(file)) as ReadableStream,
      duplex: 'half',
    } as RequestInit);
    const uploadMs = performance.now() - started;
    if (res.status !== 200) throw new Error(`upload: ${res.status} ${await res.text()}`);
    const mxc = ((await res.json()) as { content_uri: string }).content_uri;
    const url = `${base}/_matrix/client/v1/media/download/${mxc.slice('mxc://'.length)}`;
    const afterUploadRss = rssMiB(pid);

    started = performance.now();
    const one = await download(url, token);
    const downloadMs = performance.now() - started;
    if (one.sha256 !== expected) throw new Error('the download differs from the upload');

    const beforeRss = rssMiB(pid);
    let peakRss = beforeRss;
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, rssMiB(pid));
    }, 20);
    started = performance.now();
    const all = await Promise.all(Array.from({ length: CLIENTS }, () => download(url, token)));
    const concurrentMs = performance.now() - started;
    clearInterval(sampler);
    peakRss = Math.max(peakRss, rssMiB(pid));
    if (all.some((d) => d.sha256 !== expected)) throw new Error('a concurrent download differs');

    console.log(`file: ${MB} MiB, ${CLIENTS} concurrent clients, one server on PGlite, same machine`);
    console.log(`upload:   ${uploadMs.toFixed(0)} ms, ${mibPerSecond(BYTES, uploadMs)} MiB/s`);
    console.log(`download: ${downloadMs.toFixed(0)} ms, ${mibPerSecond(BYTES, downloadMs)} MiB/s`);
    console.log(
      `${CLIENTS} downloads at once: ${concurrentMs.toFixed(0)} ms, ${mibPerSecond(BYTES * CLIENTS, concurrentMs)} MiB/s in all`,
    );
    console.log(
      `server RSS: idle ${idleRss.toFixed(0)} MiB, after the upload ${afterUploadRss.toFixed(0)} MiB, ` +
        `before the concurrent downloads ${beforeRss.toFixed(0)} MiB, peak during them ${peakRss.toFixed(0)} MiB ` +
        `(${CLIENTS} x the file would be ${CLIENTS * MB} MiB); its peak since start-up, PGlite's set-up included (VmHWM), ${rssMiB(pid, 'VmHWM').toFixed(0)} MiB`,
    );
  } finally {
    await servers.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
