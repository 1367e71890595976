import type { BlockList } from 'node:net';
import { errors, MatrixError } from '../errors.ts';
import type { FederationClient } from '../federation/client/federation-client.ts';
import { parseJsonObject } from '../federation/client/federation-client.ts';
import { FederationError, type TransportResponse } from '../federation/client/transport.ts';
import { essence, fileNameOfDisposition, storedContentType } from './disposition.ts';
import { MultipartError, mixedBoundary, parseMultipart } from './multipart.ts';
import type { ThumbnailMethod } from './thumbnails.ts';
import { fetchPinned, vetHost } from './url-preview.ts';

/**
 * Fetching a media of another server (server-server API, Content Repository): first the
 * authenticated GET /_matrix/federation/v1/media/download (or /thumbnail), signed with X-Matrix,
 * whose answer is multipart/mixed (a JSON part, then the bytes or a `Location` to fetch them
 * from); when the peer does not know that endpoint, the deprecated
 * GET /_matrix/media/v3/download/{serverName}/{mediaId}?allow_remote=false. Answers are read
 * whole up to the size limit (the federation transport reads whole answers); every failure
 * becomes a MatrixError a client can be given (404, 502, 504), never anything else.
 */

export type RemoteWhat =
  | { kind: 'download' }
  | { kind: 'thumbnail'; width: number; height: number; method: ThumbnailMethod; animated: boolean };

export interface RemoteFile {
  bytes: Buffer;
  /** As the other server gave it (application/octet-stream when missing or malformed). */
  contentType: string;
  /** From its Content-Disposition, when it names one. */
  fileName: string | undefined;
}

export interface RemoteMediaOptions {
  /** Largest media taken in, in bytes (`max_upload_bytes`). */
  maxBytes: number;
  /** How long a fetch may take beyond the wait the other server is asked for. */
  transferMs: number;
  /** Addresses a `Location` may lead to although they are not public. */
  redirectAllow: BlockList;
}

/** Room for the multipart framing and the JSON part around the media's bytes. */
const MULTIPART_OVERHEAD = 64 * 1024;
const MAX_REDIRECTS = 3;

const tooLarge = () => new MatrixError(502, 'M_TOO_LARGE', 'The remote media is too large to serve');
const badGateway = (msg: string) => new MatrixError(502, 'M_UNKNOWN', msg);
const timedOut = () => new MatrixError(504, 'M_UNKNOWN', 'The remote server did not answer in time');

export class RemoteMediaFetcher {
  constructor(
    private readonly client: Pick<FederationClient, 'requestRaw'>,
    private readonly opts: RemoteMediaOptions,
  ) {}

  /** The bytes of `mxc://<origin>/<mediaId>` (or a thumbnail), asking the origin to wait `waitMs` for a pending upload. */
  async fetch(origin: string, mediaId: string, what: RemoteWhat, waitMs: number): Promise<RemoteFile> {
    const deadline = Date.now() + waitMs + this.opts.transferMs;
    // The deadline holds whatever the transport does with its own timeout.
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(timedOut()), deadline - Date.now());
    });
    try {
      return await Promise.race([this.fetchBefore(origin, mediaId, what, waitMs, deadline), expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async fetchBefore(
    origin: string,
    mediaId: string,
    what: RemoteWhat,
    waitMs: number,
    deadline: number,
  ): Promise<RemoteFile> {
    const query: Record<string, string | number | boolean> = { timeout_ms: waitMs };
    if (what.kind === 'thumbnail') {
      Object.assign(query, {
        width: what.width,
        height: what.height,
        method: what.method,
        animated: what.animated,
      });
    }
    const id = encodeURIComponent(mediaId);
    const res = await this.send(origin, `/_matrix/federation/v1/media/${what.kind}/${id}`, query, deadline);
    if (isUnknownEndpoint(res)) {
      // A server from before spec v1.11: its unauthenticated endpoint, told not to ask further.
      const legacy = await this.send(
        origin,
        `/_matrix/media/v3/${what.kind}/${encodeURIComponent(origin)}/${id}`,
        { ...query, allow_remote: false },
        deadline,
      );
      checkStatus(legacy);
      return this.fileOf(header(legacy, 'content-type'), header(legacy, 'content-disposition'), legacy.body);
    }
    checkStatus(res);
    const boundary = mixedBoundary(header(res, 'content-type'));
    if (boundary === undefined) throw badGateway('The remote server did not answer multipart/mixed');
    let parts: ReturnType<typeof parseMultipart>;
    try {
      parts = parseMultipart(Buffer.from(res.body), boundary);
    } catch (err) {
      if (err instanceof MultipartError)
        throw badGateway('The remote server answered a malformed multipart body');
      throw err;
    }
    const [meta, file] = parts;
    if (!meta || !file || parts.length !== 2)
      throw badGateway('The remote server answered other than two parts');
    if (essence(meta.headers['content-type']) !== 'application/json' || !parseJsonObject(meta.body)) {
      throw badGateway('The first part of the remote answer is not a JSON object');
    }
    const location = file.headers.location;
    if (location !== undefined) return this.followLocation(location, deadline);
    return this.fileOf(file.headers['content-type'], file.headers['content-disposition'], file.body);
  }

  private async send(
    origin: string,
    path: string,
    query: Record<string, string | number | boolean>,
    deadline: number,
  ): Promise<TransportResponse> {
    const timeoutMs = deadline - Date.now();
    if (timeoutMs <= 0) throw timedOut();
    try {
      return await this.client.requestRaw({
        destination: origin,
        method: 'GET',
        path,
        query,
        timeoutMs,
        maxResponseBytes: this.opts.maxBytes + MULTIPART_OVERHEAD,
        accept: '*/*',
      });
    } catch (err) {
      if (!(err instanceof FederationError)) throw err;
      if (err.kind === 'timeout') throw timedOut();
      if (err.kind === 'too-large') throw tooLarge();
      throw badGateway('The remote server could not be reached');
    }
  }

  private fileOf(
    contentType: string | undefined,
    disposition: string | undefined,
    bytes: Uint8Array,
  ): RemoteFile {
    if (bytes.length > this.opts.maxBytes) throw tooLarge();
    return {
      bytes: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length),
      contentType: storedContentType(contentType),
      fileName: fileNameOfDisposition(disposition),
    };
  }

  /** The media where the other server's `Location` points: http or https, public addresses only, redirects checked again. */
  private async followLocation(location: string, deadline: number): Promise<RemoteFile> {
    let url: URL;
    try {
      url = new URL(location);
    } catch {
      throw badGateway('The remote server gave a Location that is not a URL');
    }
    for (let hop = 0; ; hop++) {
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw badGateway('The remote server gave a Location that is not http or https');
      }
      let target: { address: string; family: number };
      try {
        target = await vetHost(url.hostname, this.opts.redirectAllow);
      } catch (err) {
        if (err instanceof MatrixError) throw badGateway(`The remote media's Location: ${err.message}`);
        throw err;
      }
      const ms = deadline - Date.now();
      if (ms <= 0) throw timedOut();
      const res = await fetchPinned(url, target, {
        maxBytes: this.opts.maxBytes,
        overflow: 'refuse',
        signal: AbortSignal.timeout(ms),
        accept: '*/*',
        userAgent: 'Conclave media',
        failure: (late) => (late ? timedOut() : badGateway('The remote media could not be fetched')),
        tooLarge,
      });
      if (res.redirect !== undefined) {
        if (hop >= MAX_REDIRECTS) throw badGateway('Too many redirects for the remote media');
        try {
          url = new URL(res.redirect, url);
        } catch {
          throw badGateway('The remote media redirected to something that is not a URL');
        }
        continue;
      }
      if (res.status === 404) throw errors.notFound('The remote server has no such media');
      if (res.status < 200 || res.status >= 300) {
        throw badGateway(`The remote media's Location answered ${res.status}`);
      }
      return this.fileOf(res.contentType, res.disposition, res.body);
    }
  }
}

function header(res: TransportResponse, name: string): string | undefined {
  const value = res.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Whether the answer says the endpoint is unknown (so the deprecated one is tried): 404 or 405
 * with M_UNRECOGNIZED or without a JSON body, as the spec and older servers answer, or 400 with
 * M_UNRECOGNIZED or a body that is not a Matrix error at all (some servers and test servers do).
 */
export function isUnknownEndpoint(res: TransportResponse): boolean {
  if (res.status !== 404 && res.status !== 405 && res.status !== 400) return false;
  const json = parseJsonObject(res.body);
  if (json === undefined) return true;
  return json.errcode === 'M_UNRECOGNIZED';
}

/** Maps an error status of the other server to what the client is told. */
function checkStatus(res: TransportResponse): void {
  if (res.status >= 200 && res.status < 300) return;
  const errcode = parseJsonObject(res.body)?.errcode;
  if (res.status === 404) throw errors.notFound('The remote server has no such media');
  if (res.status === 504 && errcode === 'M_NOT_YET_UPLOADED') {
    throw new MatrixError(504, 'M_NOT_YET_UPLOADED', 'The media has not been uploaded yet');
  }
  if (errcode === 'M_TOO_LARGE') throw tooLarge();
  throw badGateway(`The remote server answered ${res.status}`);
}
