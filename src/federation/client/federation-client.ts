import type { JsonValue } from '../../protocol/json.ts';
import { formatXMatrixHeader, requestSigningObject } from '../../protocol/x-matrix.ts';
import type { ServerKeysService } from '../../services/server-keys.service.ts';
import {
  FederationError,
  type FederationMethod,
  type FederationTransport,
  type TransportResponse,
} from './transport.ts';

export const DEFAULT_TIMEOUT_MS = 30_000;
/** Federation answers larger than this are abandoned (a room's state can be large). */
export const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** What signing a request needs of this server's keys (ServerKeysService has it). */
export type RequestSigner = Pick<ServerKeysService, 'serverName' | 'key' | 'sign'>;

export interface FederationRequest {
  destination: string;
  method: FederationMethod;
  /** The path from `/_matrix/` on, with path parameters already percent-encoded. */
  path: string;
  query?: Record<string, string | number | boolean | ReadonlyArray<string>>;
  /** A JSON body; POST and PUT without one send `{}`, as the spec requires. */
  body?: JsonValue;
  timeoutMs?: number;
  maxResponseBytes?: number;
  /** The Accept header; `application/json` unless told. */
  accept?: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Outbound server-server requests: every request is signed with X-Matrix as this server and
 * goes through the transport; answers come back as parsed JSON objects or a FederationError.
 */
export class FederationClient {
  constructor(
    private readonly serverKeys: RequestSigner,
    private readonly transport: FederationTransport,
  ) {}

  get serverName(): string {
    return this.serverKeys.serverName;
  }

  async request<T = Record<string, unknown>>(req: FederationRequest): Promise<T> {
    const res = await this.requestRaw(req);
    const json = parseJsonObject(res.body);
    if (res.status < 200 || res.status > 299) {
      const errcode = typeof json?.errcode === 'string' ? json.errcode : undefined;
      const error = typeof json?.error === 'string' ? `: ${json.error.slice(0, 200)}` : '';
      throw new FederationError(
        'http',
        req.destination,
        `${req.method} ${req.path} -> ${res.status}${error}`,
        {
          status: res.status,
          ...(errcode !== undefined ? { errcode } : {}),
          body: json,
        },
      );
    }
    if (json === undefined) {
      throw new FederationError(
        'bad-response',
        req.destination,
        `${req.method} ${req.path}: not a JSON object`,
        {
          status: res.status,
        },
      );
    }
    return json as T;
  }

  /**
   * A signed request whose answer comes back as it arrived (status, headers, bytes), whatever its
   * status: for the APIs that do not answer JSON (media). Transport failures still throw.
   */
  async requestRaw(req: FederationRequest): Promise<TransportResponse> {
    const uri = req.path + queryString(req.query);
    const content = req.body ?? (req.method === 'POST' || req.method === 'PUT' ? {} : undefined);
    const signed = this.serverKeys.sign(
      requestSigningObject({
        method: req.method,
        uri,
        origin: this.serverName,
        destination: req.destination,
        ...(content !== undefined ? { content } : {}),
      }),
    );
    const keyId = this.serverKeys.key.keyId;
    const headers: Record<string, string> = {
      authorization: formatXMatrixHeader({
        origin: this.serverName,
        destination: req.destination,
        key: keyId,
        sig: signed.signatures[this.serverName]![keyId]!,
      }),
      accept: req.accept ?? 'application/json',
    };
    let body: Uint8Array | undefined;
    if (content !== undefined) {
      body = Buffer.from(JSON.stringify(content));
      headers['content-type'] = 'application/json';
    }
    return this.transport.send({
      destination: req.destination,
      method: req.method,
      uri,
      headers,
      ...(body ? { body } : {}),
      timeoutMs: req.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      maxResponseBytes: req.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
    });
  }
}

export function parseJsonObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(utf8.decode(bytes));
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function queryString(query: FederationRequest['query']): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (Array.isArray(value)) for (const v of value) params.append(name, v);
    else params.append(name, String(value));
  }
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}
