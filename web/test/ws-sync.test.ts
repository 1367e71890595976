import { describe, expect, it } from 'vitest';
import { type SocketLike, WebSocketSync } from '../src/matrix/ws-sync.ts';

/** A socket driven by the test: it records what was opened and lets the test push frames. */
class TestSocket implements SocketLike {
  static opened: TestSocket[] = [];
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  closedWith: number | null = null;
  constructor(readonly url: string) {
    TestSocket.opened.push(this);
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  frame(body: Record<string, unknown>) {
    this.onmessage?.({ data: JSON.stringify({ type: 'sync', ...body }) });
  }
  serverClose(code: number, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  send() {}
  close(code?: number) {
    this.closedWith = code ?? 1000;
  }
}

function setup() {
  TestSocket.opened = [];
  const polled: string[] = [];
  const transports: string[] = [];
  const sync = new WebSocketSync({
    baseUrl: 'https://hs.example',
    accessToken: () => 'tok',
    fetch: async (input) => {
      const url = String(input);
      polled.push(url);
      return new Response(JSON.stringify({ next_batch: 'polled' }), {
        headers: { 'content-type': 'application/json' },
      });
    },
    createSocket: (url) => new TestSocket(url),
    onTransport: (t) => transports.push(t),
    openTimeoutMs: 200,
    retryAfterMs: 60_000,
  });
  return { sync, polled, transports };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('WebSocket sync under the SDK fetch', () => {
  it('answers /sync?since from frames, in order, on one socket', async () => {
    const { sync, polled, transports } = setup();
    const first = sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=s1&timeout=30000&filter=7');
    await tick();
    const socket = TestSocket.opened[0]!;
    const url = new URL(socket.url);
    expect(url.protocol).toBe('wss:');
    expect(url.pathname).toBe('/_conclave/client/v1/sync');
    expect(url.searchParams.get('since')).toBe('s1');
    expect(url.searchParams.get('filter')).toBe('7');
    expect(url.searchParams.get('access_token')).toBe('tok');
    socket.open();
    socket.frame({ next_batch: 's2', rooms: { join: { '!a': {} } } });
    socket.frame({ next_batch: 's3' });
    const r1 = await (await first).json();
    expect(r1).toEqual({ next_batch: 's2', rooms: { join: { '!a': {} } } });
    const r2 = await (
      await sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=s2&filter=7')
    ).json();
    expect(r2.next_batch).toBe('s3');
    expect(TestSocket.opened).toHaveLength(1);
    expect(polled).toEqual([]);
    expect(transports).toEqual(['websocket']);
  });

  it('the initial sync and other requests go over HTTP', async () => {
    const { sync, polled } = setup();
    await sync.fetchFn('https://hs.example/_matrix/client/v3/sync?filter=7');
    await sync.fetchFn('https://hs.example/_matrix/client/v3/rooms/!a/messages?from=x');
    expect(polled).toHaveLength(2);
    expect(TestSocket.opened).toHaveLength(0);
  });

  it('a quiet socket answers an empty batch with the same token when the timeout passes', async () => {
    const { sync } = setup();
    const p = sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=s5&timeout=20');
    await tick();
    TestSocket.opened[0]!.open();
    const body = await (await p).json();
    expect(body.next_batch).toBe('s5');
    expect(body.rooms.join).toEqual({});
  });

  it('falls back to long-polling when the socket cannot open, and does not retry at once', async () => {
    const { sync, polled, transports } = setup();
    const p = sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=s1&timeout=30000');
    await tick();
    TestSocket.opened[0]!.serverClose(1006);
    expect(await (await p).json()).toEqual({ next_batch: 'polled' });
    await sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=polled&timeout=30000');
    expect(TestSocket.opened).toHaveLength(1);
    expect(polled).toHaveLength(2);
    expect(transports).toEqual(['long-poll']);
  });

  it('a socket that dies mid-wait long-polls that round and reconnects from the token asked', async () => {
    const { sync, polled } = setup();
    const p = sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=s1&timeout=30000');
    await tick();
    const first = TestSocket.opened[0]!;
    first.open();
    first.serverClose(4008, 'slow');
    expect(await (await p).json()).toEqual({ next_batch: 'polled' });
    const again = sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=polled&timeout=30000');
    await tick();
    const second = TestSocket.opened[1]!;
    expect(new URL(second.url).searchParams.get('since')).toBe('polled');
    second.open();
    second.frame({ next_batch: 's9' });
    expect((await (await again).json()).next_batch).toBe('s9');
    expect(polled).toHaveLength(1);
  });

  it('close codes 4401 and 4400 become the errors /sync would answer', async () => {
    const { sync } = setup();
    const p = sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=s1&timeout=30000');
    await tick();
    TestSocket.opened[0]!.open();
    TestSocket.opened[0]!.serverClose(4401, 'logged out');
    const r = await p;
    expect(r.status).toBe(401);
    expect((await r.json()).errcode).toBe('M_UNKNOWN_TOKEN');

    const q = sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=bad&timeout=30000');
    await tick();
    TestSocket.opened[1]!.open();
    TestSocket.opened[1]!.serverClose(4400, 'M_INVALID_PARAM: bad since');
    const r2 = await q;
    expect(r2.status).toBe(400);
    expect(await r2.json()).toEqual({ errcode: 'M_INVALID_PARAM', error: 'bad since' });
  });

  it('a since that is not where the socket is reconnects from it', async () => {
    const { sync } = setup();
    const p = sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=s1&timeout=30000');
    await tick();
    TestSocket.opened[0]!.open();
    TestSocket.opened[0]!.frame({ next_batch: 's2' });
    await p;
    void sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=other&timeout=30000');
    await tick();
    expect(TestSocket.opened).toHaveLength(2);
    expect(TestSocket.opened[0]!.closedWith).toBe(1000);
    expect(new URL(TestSocket.opened[1]!.url).searchParams.get('since')).toBe('other');
    sync.stop();
  });

  it('an aborted request rejects', async () => {
    const { sync } = setup();
    const ac = new AbortController();
    const p = sync.fetchFn('https://hs.example/_matrix/client/v3/sync?since=s1&timeout=30000', {
      signal: ac.signal,
    });
    await tick();
    TestSocket.opened[0]!.open();
    await tick();
    ac.abort();
    await expect(p).rejects.toBeTruthy();
  });
});
