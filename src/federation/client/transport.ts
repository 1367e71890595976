/**
 * How signed federation requests reach another server. The default transport speaks HTTPS after
 * server discovery (https-transport.ts); tests plug in one that hands requests to another
 * in-process server.
 */

export type FederationMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface TransportRequest {
  /** The server name, as the request was signed for (before any delegation). */
  destination: string;
  method: FederationMethod;
  /** Path and query, from `/_matrix/...` on. */
  uri: string;
  headers: Record<string, string>;
  body?: Uint8Array;
  timeoutMs: number;
  /** Larger responses are abandoned with a `too-large` error. */
  maxResponseBytes: number;
}

export interface TransportResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Uint8Array;
}

export interface FederationTransport {
  /** Sends one request; throws FederationError (never anything else) when no answer arrives. */
  send(request: TransportRequest): Promise<TransportResponse>;
}

export type FederationErrorKind =
  /** Discovery failed or no connection could be made (DNS, TCP, TLS). */
  | 'unreachable'
  | 'timeout'
  | 'too-large'
  /** An answer arrived but it is not the JSON object the API promises. */
  | 'bad-response'
  /** The server answered with an error status. */
  | 'http';

/** Why a federation request did not produce a usable answer. */
export class FederationError extends Error {
  override name = 'FederationError';

  constructor(
    readonly kind: FederationErrorKind,
    readonly destination: string,
    message: string,
    readonly details: { status?: number; errcode?: string; body?: unknown; cause?: unknown } = {},
  ) {
    super(`${destination}: ${message}`);
  }

  get status(): number | undefined {
    return this.details.status;
  }

  get errcode(): string | undefined {
    return this.details.errcode;
  }
}
