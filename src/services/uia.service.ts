import { randomBytes } from 'node:crypto';
import { MatrixError } from '../errors.ts';
import type { JsonObject } from '../protocol/json.ts';
import type { Db } from '../storage/connect.ts';

/**
 * User-interactive authentication (client-server API, "User-interactive authentication API").
 * A session is bound to one kind of request and, when the user is known, to that user. Sessions
 * live in the database so any server process can continue one.
 */
export type UiaKind = 'register' | 'password' | 'delete_devices' | 'device_signing' | 'deactivate';

export interface UiaFlow {
  stages: string[];
}

/**
 * The 401 answer of UIA. Its body carries errcode and error only when a stage just failed, so a
 * client can tell a first challenge from a wrong password.
 */
export class UiaChallenge extends MatrixError {
  constructor(
    private readonly body: Record<string, unknown>,
    private readonly failed?: { errcode: string; error: string },
  ) {
    super(401, failed?.errcode ?? 'M_UNAUTHORIZED', failed?.error ?? 'Additional authentication required');
  }

  override toJSON(): Record<string, unknown> {
    return this.failed ? { ...this.failed, ...this.body } : { ...this.body };
  }
}

/**
 * A stage refused outright rather than failed: the auth dict names someone other than the
 * logged-in user. Answered as it is (403), not as a new 401 challenge; the session stays open.
 */
export class UiaRefusal extends MatrixError {}

/** Checks one stage's auth dict; returns normally when it passes, throws a MatrixError otherwise. */
export type StageChecker = (auth: Record<string, unknown>, session: UiaSession) => Promise<void>;

export interface UiaSession {
  id: string;
  kind: UiaKind;
  userId: string | null;
  completed: string[];
  params: JsonObject;
  /** Private to the server (never sent to the client), e.g. a registration token already checked. */
  data: JsonObject;
}

const SESSION_LIFETIME_MS = 60 * 60 * 1000;

export class UiaService {
  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Runs one round of UIA. Returns the completed session when some flow is fully done; throws the
   * 401 UIA response (flows, params, session, completed, and the error of a failed stage) otherwise.
   */
  async authenticate(opts: {
    kind: UiaKind;
    userId: string | null;
    auth: unknown;
    flows: UiaFlow[];
    checkers: Record<string, StageChecker>;
    params?: JsonObject;
  }): Promise<UiaSession> {
    const auth = opts.auth;
    if (auth !== undefined && (typeof auth !== 'object' || auth === null || Array.isArray(auth))) {
      throw new MatrixError(400, 'M_BAD_JSON', 'auth must be an object');
    }
    const authDict = (auth ?? {}) as Record<string, unknown>;
    let session: UiaSession;
    if (authDict.session === undefined) {
      session = await this.create(opts.kind, opts.userId, opts.params ?? {});
    } else {
      if (typeof authDict.session !== 'string')
        throw new MatrixError(400, 'M_BAD_JSON', 'auth.session must be a string');
      const found = await this.load(authDict.session);
      if (!found || found.kind !== opts.kind || found.userId !== opts.userId) {
        throw new MatrixError(400, 'M_UNKNOWN', 'Unknown or expired UIA session');
      }
      session = found;
    }

    const challenge = (failed?: { errcode: string; error: string }) =>
      new UiaChallenge(
        { flows: opts.flows, params: session.params, session: session.id, completed: session.completed },
        failed,
      );

    if (auth === undefined || authDict.type === undefined) {
      if (this.flowDone(opts.flows, session.completed)) return session;
      throw challenge();
    }
    const type = authDict.type;
    if (typeof type !== 'string') throw new MatrixError(400, 'M_BAD_JSON', 'auth.type must be a string');
    const allowed = opts.flows.some((f) => f.stages.includes(type));
    const checker = opts.checkers[type];
    if (!allowed || !checker) {
      throw challenge({
        errcode: 'M_UNRECOGNIZED',
        error: `Authentication type ${type} is not offered here`,
      });
    }
    try {
      await checker(authDict, session);
    } catch (err) {
      if (err instanceof MatrixError && err.status !== 429 && !(err instanceof UiaRefusal)) {
        throw challenge({ errcode: err.errcode, error: err.message });
      }
      throw err;
    }
    if (!session.completed.includes(type)) session.completed.push(type);
    await this.db
      .updateTable('uia_sessions')
      .set({ completed: JSON.stringify(session.completed), data: JSON.stringify(session.data) })
      .where('session_id', '=', session.id)
      .execute();
    if (this.flowDone(opts.flows, session.completed)) return session;
    throw challenge();
  }

  /**
   * Authenticates, then runs the action the session authorises. The session ends after one
   * attempt at the action, whether it succeeds or fails, so a completed session can never
   * authorise a second, different request.
   */
  async run<T>(
    opts: Parameters<UiaService['authenticate']>[0],
    action: (session: UiaSession) => Promise<T>,
  ): Promise<T> {
    const session = await this.authenticate(opts);
    try {
      return await action(session);
    } finally {
      await this.finish(session);
    }
  }

  /** Ends a session. */
  async finish(session: UiaSession): Promise<void> {
    await this.db.deleteFrom('uia_sessions').where('session_id', '=', session.id).execute();
  }

  private flowDone(flows: UiaFlow[], completed: string[]): boolean {
    return flows.some((f) => f.stages.every((s) => completed.includes(s)));
  }

  private async create(kind: UiaKind, userId: string | null, params: JsonObject): Promise<UiaSession> {
    const id = randomBytes(18).toString('base64url');
    const now = this.now();
    await this.db
      .deleteFrom('uia_sessions')
      .where('created_ts', '<', now - SESSION_LIFETIME_MS)
      .execute();
    await this.db
      .insertInto('uia_sessions')
      .values({
        session_id: id,
        kind,
        user_id: userId,
        completed: '[]',
        params: JSON.stringify(params),
        data: '{}',
        created_ts: now,
      })
      .execute();
    return { id, kind, userId, completed: [], params, data: {} };
  }

  private async load(id: string): Promise<UiaSession | undefined> {
    const row = await this.db
      .selectFrom('uia_sessions')
      .selectAll()
      .where('session_id', '=', id)
      .where('created_ts', '>=', this.now() - SESSION_LIFETIME_MS)
      .executeTakeFirst();
    if (!row) return undefined;
    return {
      id: row.session_id,
      kind: row.kind as UiaKind,
      userId: row.user_id,
      completed: row.completed,
      params: row.params,
      data: row.data,
    };
  }
}
