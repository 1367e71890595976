/**
 * Conclave's WebSocket sync transport (spec/websocket.md) under matrix-js-sdk's ordinary /sync
 * loop: the SDK is given `fetchFn`, and each `GET /v3/sync?since=X` it makes is answered from
 * the socket's frames instead of a long-poll. A frame carries exactly the body /sync would
 * return and its `next_batch` is a valid `since` for either transport, so when the socket
 * cannot be used the same request simply goes to the server as a long-poll.
 */

/** What we use of the browser's WebSocket (so that tests can hand in another one). */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type Transport = 'websocket' | 'long-poll';

export interface WsSyncOptions {
  baseUrl: string;
  accessToken: () => string;
  fetch: typeof fetch;
  createSocket?: (url: string) => SocketLike;
  /** Called when the transport answering /sync changes. */
  onTransport?: (transport: Transport) => void;
  /** How long to wait for a socket to open before falling back (ms). */
  openTimeoutMs?: number;
  /** After a socket fails to open, long-poll for this long before trying again (ms). */
  retryAfterMs?: number;
  now?: () => number;
}

interface Frame {
  /** The token this frame continues from. */
  from: string;
  body: Record<string, unknown>;
}

interface Connection {
  socket: SocketLike;
  filter: string | null;
  /** The next_batch of the last frame, or the `since` we connected with. */
  position: string;
  open: boolean;
  closed: { code: number; reason: string } | null;
}

const SYNC_PATH = /\/_matrix\/client\/v3\/sync$/;

function jsonResponse(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

export function emptySync(since: string): Record<string, unknown> {
  return {
    next_batch: since,
    rooms: { join: {}, invite: {}, leave: {}, knock: {} },
    account_data: { events: [] },
    presence: { events: [] },
    to_device: { events: [] },
    device_lists: { changed: [], left: [] },
    device_one_time_keys_count: {},
  };
}

/** Turns a close with code 4400 ("M_X: message") or 4401 into the error /sync would have answered. */
function closeToResponse(closed: { code: number; reason: string }): Response | null {
  if (closed.code === 4401) {
    return jsonResponse(401, { errcode: 'M_UNKNOWN_TOKEN', error: closed.reason || 'Token no longer valid' });
  }
  if (closed.code === 4400) {
    const m = /^(M_[A-Z_]+): ?(.*)$/.exec(closed.reason);
    return jsonResponse(400, { errcode: m?.[1] ?? 'M_UNKNOWN', error: m?.[2] ?? closed.reason });
  }
  return null;
}

export class WebSocketSync {
  private conn: Connection | null = null;
  private frames: Frame[] = [];
  private waiters = new Set<() => void>();
  private noSocketUntil = 0;
  private transport: Transport | null = null;
  private stopped = false;
  private readonly opts: Required<Omit<WsSyncOptions, 'onTransport'>> & Pick<WsSyncOptions, 'onTransport'>;

  constructor(opts: WsSyncOptions) {
    this.opts = {
      createSocket: (url) => new WebSocket(url) as unknown as SocketLike,
      openTimeoutMs: 5000,
      retryAfterMs: 30_000,
      now: () => Date.now(),
      ...opts,
    };
  }

  /** The fetch to give the SDK: /sync goes through the socket, everything else straight through. */
  readonly fetchFn: typeof fetch = (input, init) => {
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    const method = (init?.method ?? 'GET').toUpperCase();
    if (!this.stopped && method === 'GET' && SYNC_PATH.test(url.pathname)) {
      return this.sync(url, input, init);
    }
    return this.opts.fetch(input, init);
  };

  get currentTransport(): Transport | null {
    return this.transport;
  }

  stop(): void {
    this.stopped = true;
    this.drop();
  }

  private setTransport(transport: Transport): void {
    if (this.transport === transport) return;
    this.transport = transport;
    this.opts.onTransport?.(transport);
  }

  private longPoll(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    this.setTransport('long-poll');
    return this.opts.fetch(input, init);
  }

  private async sync(url: URL, input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const since = url.searchParams.get('since');
    const filter = url.searchParams.get('filter');
    const timeout = Number(url.searchParams.get('timeout') ?? '30000');
    // The initial sync and full-state syncs are single requests: no reason to open a socket.
    if (since === null || url.searchParams.get('full_state') === 'true') return this.longPoll(input, init);

    const queued = this.takeFrame(since);
    if (queued) return this.answer(queued);

    if (!this.usable(since, filter)) {
      if (this.opts.now() < this.noSocketUntil) return this.longPoll(input, init);
      const opened = await this.connect(since, filter, init?.signal ?? null);
      if (!opened) {
        this.noSocketUntil = this.opts.now() + this.opts.retryAfterMs;
        return this.longPoll(input, init);
      }
    }
    const outcome = await this.waitForFrame(since, Number.isFinite(timeout) ? timeout : 30000, init?.signal);
    if (outcome === 'frame') return this.answer(this.takeFrame(since)!);
    if (outcome === 'timeout') return jsonResponse(200, emptySync(since));
    // The socket closed: 4400 and 4401 are answers; anything else, long-poll this round.
    const closed = this.conn?.closed;
    const error = closed ? closeToResponse(closed) : null;
    this.drop();
    if (error) return error;
    return this.longPoll(input, init);
  }

  private answer(frame: Frame): Response {
    this.setTransport('websocket');
    return jsonResponse(200, frame.body);
  }

  private takeFrame(since: string): Frame | undefined {
    // Frames older than `since` can never be asked for again.
    const i = this.frames.findIndex((f) => f.from === since);
    if (i < 0) return undefined;
    const [frame] = this.frames.splice(0, i + 1).slice(-1);
    return frame;
  }

  /** An open socket whose next frame continues from `since`, with the same filter. */
  private usable(since: string, filter: string | null): boolean {
    const c = this.conn;
    return !!c?.open && c.closed === null && c.filter === filter && c.position === since;
  }

  private drop(): void {
    const c = this.conn;
    this.conn = null;
    this.frames = [];
    if (c) {
      c.socket.onmessage = null;
      c.socket.onclose = null;
      c.socket.onerror = null;
      c.socket.onopen = null;
      if (c.closed === null) c.socket.close(1000, 'done');
    }
    this.wake();
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private connect(since: string, filter: string | null, signal: AbortSignal | null): Promise<boolean> {
    this.drop();
    const base = new URL(this.opts.baseUrl);
    base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
    base.pathname = `${base.pathname.replace(/\/$/, '')}/_conclave/client/v1/sync`;
    const params = new URLSearchParams({ access_token: this.opts.accessToken(), since });
    if (filter !== null) params.set('filter', filter);
    base.search = params.toString();
    let socket: SocketLike;
    try {
      socket = this.opts.createSocket(base.href);
    } catch {
      return Promise.resolve(false);
    }
    const conn: Connection = { socket, filter, position: since, open: false, closed: null };
    this.conn = conn;
    socket.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let frame: unknown;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (typeof frame !== 'object' || frame === null) return;
      const { type, ...body } = frame as Record<string, unknown>;
      if (type !== 'sync' || typeof body.next_batch !== 'string') return;
      this.frames.push({ from: conn.position, body });
      conn.position = body.next_batch;
      this.wake();
    };
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => finish(false), this.opts.openTimeoutMs);
      const onAbort = () => finish(false);
      signal?.addEventListener('abort', onAbort);
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (!ok && this.conn === conn) this.drop();
        resolve(ok);
      };
      socket.onopen = () => {
        conn.open = true;
        finish(true);
      };
      socket.onerror = () => {
        if (!conn.open) finish(false);
      };
      socket.onclose = (ev) => {
        conn.closed = { code: ev.code, reason: ev.reason };
        if (!conn.open) finish(false);
        this.wake();
      };
    });
  }

  private waitForFrame(
    since: string,
    timeoutMs: number,
    signal: AbortSignal | null | undefined,
  ): Promise<'frame' | 'timeout' | 'closed'> {
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = () => {
        this.waiters.delete(check);
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        done();
        reject(signal?.reason ?? new DOMException('Aborted', 'AbortError'));
      };
      const check = () => {
        if (this.frames.some((f) => f.from === since)) {
          done();
          resolve('frame');
        } else if (!this.conn || this.conn.closed !== null) {
          done();
          resolve('closed');
        }
      };
      if (signal?.aborted) return onAbort();
      this.waiters.add(check);
      signal?.addEventListener('abort', onAbort);
      timer = setTimeout(() => {
        done();
        resolve('timeout');
      }, timeoutMs);
      check();
    });
  }
}
