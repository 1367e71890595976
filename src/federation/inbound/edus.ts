import { isJsonObject, type JsonObject } from '../../protocol/json.ts';

/**
 * Handles the content of one EDU type from `origin` (the server that signed the transaction).
 * A handler checks what it is given and ignores what it may not accept: it throws only on a
 * failure of ours (the database), which the dispatcher logs and passes over.
 */
export type EduHandler = (origin: string, content: JsonObject) => Promise<void>;

/** What the dispatcher reports of EDUs it could not use (never their content). */
export interface EduLog {
  warn(obj: object, msg: string): void;
}

/**
 * The EDUs of inbound transactions, dispatched by `edu_type` to the handler registered for it
 * (server-server API: EDUs). An EDU of a type nobody handles, or that is not an object with a
 * string `edu_type` and an object `content`, is ignored; so is one whose handler fails: the
 * transaction's answer (its PDU results) never depends on its EDUs.
 */
export class EduDispatcher {
  private readonly handlers = new Map<string, EduHandler>();
  /** EDUs ignored as malformed or of an unknown type, and handler failures (for tests and metrics). */
  ignored = 0;
  failed = 0;

  constructor(private readonly log?: EduLog) {}

  /** Registers the handler of `eduType`; one per type. */
  register(eduType: string, handler: EduHandler): void {
    if (this.handlers.has(eduType)) throw new Error(`An EDU handler for ${eduType} is registered already`);
    this.handlers.set(eduType, handler);
  }

  handles(eduType: string): boolean {
    return this.handlers.has(eduType);
  }

  /** Handles a transaction's EDUs in order, one at a time. */
  async dispatch(origin: string, edus: readonly unknown[]): Promise<void> {
    for (const edu of edus) {
      if (!isJsonObject(edu) || typeof edu.edu_type !== 'string' || !isJsonObject(edu.content)) {
        this.ignored++;
        continue;
      }
      const handler = this.handlers.get(edu.edu_type);
      if (!handler) {
        this.ignored++;
        continue;
      }
      try {
        await handler(origin, edu.content);
      } catch (err) {
        this.failed++;
        this.log?.warn(
          { origin, eduType: edu.edu_type, err: err instanceof Error ? err.message : String(err) },
          'an inbound EDU could not be handled',
        );
      }
    }
  }
}
