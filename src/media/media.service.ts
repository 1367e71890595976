import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, type ReadStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Bus } from '../bus/bus.ts';
import type { MediaConfig } from '../config.ts';
import { errors, MatrixError } from '../errors.ts';
import type { FederationClient } from '../federation/client/federation-client.ts';
import { parseServerName } from '../protocol/identifiers.ts';
import type { AuditLog } from '../services/audit-log.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { MediaRow, RemoteMediaRow } from '../storage/database.ts';
import * as repo from '../storage/media.repository.ts';
import * as refs from '../storage/media-references.repository.ts';
import { essence, hasControlCharacter, storedContentType } from './disposition.ts';
import { type RemoteFile, RemoteMediaFetcher } from './remote-media.ts';
import { FileMediaStore, type MediaStore } from './store.ts';
import {
  canThumbnail,
  chooseSize,
  imageDimensions,
  makeThumbnail,
  type ThumbnailMethod,
} from './thumbnails.ts';
import { allowList, fetchPreviewImage, previewUrl } from './url-preview.ts';

/**
 * The media repository (spec/media.md): uploads (at once, or a media ID first and its bytes
 * later), downloads, thumbnails, URL previews, and the admin's quarantine and deletion. Bytes are
 * streamed to and from the store, never held whole in memory.
 */

const UPLOADED_CHANNEL = 'media.uploaded';
/** The longest a download waits for a pending upload, whatever timeout_ms asks. */
export const MAX_WAIT_MS = 120_000;
/** The wait when the client names none (the spec's default). */
export const DEFAULT_WAIT_MS = 20_000;
const THUMBNAIL_CONCURRENCY = 2;

export const MEDIA_ID_RE = /^[A-Za-z0-9_-]{1,255}$/;

const notYetUploaded = () =>
  new MatrixError(504, 'M_NOT_YET_UPLOADED', 'The media has not been uploaded yet');
const cannotOverwrite = () =>
  new MatrixError(409, 'M_CANNOT_OVERWRITE_MEDIA', 'This media ID already has its content');
const quotaExceeded = () =>
  new MatrixError(403, 'M_RESOURCE_LIMIT_EXCEEDED', 'This upload would exceed your media quota', {
    admin_contact: '',
  });

export interface MediaUploadInput {
  body: Readable;
  /** The Content-Type header as sent. */
  contentType: string | undefined;
  /** The Content-Length header, when sent. */
  contentLength: number | undefined;
  fileName: string | undefined;
}

/** What a download or thumbnail serves. */
export interface MediaContent {
  stream: ReadStream;
  size: number;
  contentType: string;
  fileName: string | null;
}

/** One media as the admin functions list it. */
export interface MediaInfo {
  mxc: string;
  media_id: string;
  user_id: string;
  created_ts: number;
  uploaded: boolean;
  content_type: string | null;
  upload_name: string | null;
  size: number | null;
  sha256: string | null;
  quarantined: boolean;
}

export interface MediaServiceDeps {
  db: Db;
  config: MediaConfig;
  serverName: string;
  /** The data directory; media live in `<dataDir>/media` unless `config.dir` says otherwise. */
  dataDir: string;
  bus: Bus;
  audit: AuditLog;
  now?: () => number;
  /** Another store; a FileMediaStore at the configured folder by default. */
  store?: MediaStore;
  /** Signed requests to other servers, to fetch their media; without it remote media are 404. */
  remote?: Pick<FederationClient, 'requestRaw'>;
}

/** How a download or thumbnail request may be answered. */
export interface ReadOptions {
  timeoutMs?: number;
  /** The unauthenticated /_matrix/media/v3 endpoints (the freeze applies). */
  legacy?: boolean;
  /** `allow_remote=false`: a media of another server is served only if it is already kept here. */
  allowRemote?: boolean;
}

export interface ThumbnailOptions extends ReadOptions {
  width: number;
  height: number;
  method: ThumbnailMethod;
  animated: boolean;
}

export class MediaService {
  private readonly db: Db;
  private readonly config: MediaConfig;
  private readonly serverName: string;
  private readonly bus: Bus;
  private readonly audit: AuditLog;
  private readonly now: () => number;
  private store!: MediaStore;
  private tempRoot: string | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly waiters = new Map<string, Set<() => void>>();
  private thumbnailsRunning = 0;
  private readonly thumbnailQueue: Array<() => void> = [];
  private readonly fetcher: RemoteMediaFetcher | undefined;
  /** Fetches of remote media (and their thumbnails) under way, so that requests at once share one. */
  private readonly remoteFetches = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: MediaServiceDeps) {
    this.db = deps.db;
    this.config = deps.config;
    this.serverName = deps.serverName;
    this.bus = deps.bus;
    this.audit = deps.audit;
    this.now = deps.now ?? Date.now;
    if (deps.remote) {
      this.fetcher = new RemoteMediaFetcher(deps.remote, {
        maxBytes: this.config.maxUploadBytes,
        transferMs: this.config.remoteMediaTimeoutMs,
        redirectAllow: allowList(this.config.remoteMediaRedirectAllow),
      });
    }
  }

  async start(): Promise<void> {
    if (this.deps.store) this.store = this.deps.store;
    else {
      let dir = this.config.dir;
      if (dir === '' && this.deps.dataDir !== '') dir = path.join(this.deps.dataDir, 'media');
      if (dir === '') {
        // No data directory (the in-memory test set-up): a temporary folder, removed at stop.
        this.tempRoot = await mkdtemp(path.join(os.tmpdir(), 'conclave-media-'));
        dir = this.tempRoot;
      }
      const store = new FileMediaStore(dir);
      await store.init();
      this.store = store;
    }
    this.unsubscribe = await this.bus.subscribe(UPLOADED_CHANNEL, (mediaId) => this.wake(mediaId));
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    for (const set of this.waiters.values()) for (const wake of set) wake();
    if (this.tempRoot) await rm(this.tempRoot, { recursive: true, force: true });
  }

  /** GET /media/config. */
  mediaConfig(): Record<string, number> {
    return { 'm.upload.size': this.config.maxUploadBytes };
  }

  /** POST /media/v3/upload: stores the bytes under a new media ID. */
  async upload(userId: string, input: MediaUploadInput): Promise<{ content_uri: string }> {
    const received = await this.receive(userId, input.body, input.contentLength);
    const mediaId = newMediaId();
    const now = this.now();
    await this.takeIn(received, async (trx) => {
      await repo.insertMedia(trx, {
        media_id: mediaId,
        user_id: userId,
        created_ts: now,
        unused_expires_ts: null,
        uploaded_ts: now,
        content_type: storedContentType(input.contentType),
        upload_name: cleanFileName(input.fileName),
        size: received.size,
        sha256: received.sha256,
      });
    });
    return { content_uri: this.mxc(mediaId) };
  }

  /** POST /media/v1/create: a media ID whose bytes come later, by PUT, before it expires. */
  async create(userId: string): Promise<{ content_uri: string; unused_expires_at: number }> {
    const now = this.now();
    await repo.deleteExpiredPending(this.db, now, userId);
    const pending = await repo.countPendingMedia(this.db, userId, now);
    if (pending >= this.config.maxPendingPerUser) {
      throw new MatrixError(429, 'M_LIMIT_EXCEEDED', 'Too many media IDs waiting for their upload', {
        retry_after_ms: Math.min(this.config.unusedExpiryMs, 60_000),
      });
    }
    const mediaId = newMediaId();
    const expires = now + this.config.unusedExpiryMs;
    await repo.insertMedia(this.db, {
      media_id: mediaId,
      user_id: userId,
      created_ts: now,
      unused_expires_ts: expires,
      uploaded_ts: null,
      content_type: null,
      upload_name: null,
      size: null,
      sha256: null,
    });
    return { content_uri: this.mxc(mediaId), unused_expires_at: expires };
  }

  /** PUT /media/v3/upload/{serverName}/{mediaId}: the bytes of a media ID made by create(). */
  async uploadTo(
    userId: string,
    serverName: string,
    mediaId: string,
    input: MediaUploadInput,
  ): Promise<void> {
    checkMediaId(mediaId);
    if (serverName !== this.serverName) throw errors.notFound('No such media ID on this server');
    const row = await repo.findMedia(this.db, mediaId);
    if (!row || this.expired(row)) throw errors.notFound('No such media ID');
    if (row.user_id !== userId) throw errors.forbidden('This media ID was created by another user');
    if (row.uploaded_ts !== null) throw cannotOverwrite();
    const received = await this.receive(userId, input.body, input.contentLength);
    await this.takeIn(received, async (trx) => {
      const done = await repo.completePendingMedia(trx, mediaId, {
        uploaded_ts: this.now(),
        content_type: storedContentType(input.contentType),
        upload_name: cleanFileName(input.fileName),
        size: received.size,
        sha256: received.sha256,
      });
      if (!done) throw cannotOverwrite();
    });
    await this.bus.publish(UPLOADED_CHANNEL, mediaId);
  }

  /**
   * The bytes of a media, waiting up to `timeoutMs` for a pending one. A media of another server
   * is fetched from it once and kept (spec/media.md, Remote media).
   */
  async download(serverName: string, mediaId: string, opts: ReadOptions): Promise<MediaContent> {
    if (this.isRemote(serverName, mediaId)) {
      const row = await this.remoteOriginal(serverName, mediaId, opts);
      return {
        stream: this.store.open(row.sha256),
        size: Number(row.size),
        contentType: row.content_type,
        fileName: row.upload_name,
      };
    }
    const row = await this.readable(serverName, mediaId, opts);
    return {
      stream: this.store.open(row.sha256!),
      size: Number(row.size),
      contentType: row.content_type ?? 'application/octet-stream',
      fileName: row.upload_name,
    };
  }

  /** A thumbnail of an image, made (or, of a remote media, fetched) once per offered size and kept. */
  async thumbnail(serverName: string, mediaId: string, opts: ThumbnailOptions): Promise<MediaContent> {
    if (this.isRemote(serverName, mediaId)) return this.remoteThumbnail(serverName, mediaId, opts);
    const row = await this.readable(serverName, mediaId, opts);
    const sourceType = essence(row.content_type);
    if (!canThumbnail(sourceType)) {
      throw new MatrixError(400, 'M_UNKNOWN', 'This media cannot be thumbnailed');
    }
    const size = chooseSize(opts.width, opts.height, opts.method);
    const key = { media_id: mediaId, ...size, animated: opts.animated };
    let thumb = await repo.findThumbnail(this.db, key);
    if (!thumb || !(await this.store.has(thumb.sha256))) {
      const made = await this.thumbnailOf(row.sha256, sourceType, size, opts.animated);
      const newThumb = {
        ...key,
        content_type: made.contentType,
        size: made.size,
        sha256: made.sha256,
        created_ts: this.now(),
      };
      await this.takeIn(made, (trx) => repo.insertThumbnail(trx, newThumb));
      thumb = newThumb;
    }
    return this.servedThumbnail(thumb);
  }

  /** A kept thumbnail (local or of a remote media) as an answer. */
  private servedThumbnail(t: { sha256: string; size: number; content_type: string }): MediaContent {
    return {
      stream: this.store.open(t.sha256),
      size: Number(t.size),
      contentType: t.content_type,
      fileName: null,
    };
  }

  /**
   * GET /media/preview_url: the page's Open Graph data. Its `og:image`, when it names a PNG,
   * JPEG, GIF or WebP image within `max_upload_bytes` (and the user's quota), is fetched under the same rules
   * and kept as a media of this server uploaded by the user: `og:image` is then its mxc URI, with
   * `og:image:type`, `og:image:width`, `og:image:height` and `matrix:image:size`. An image that
   * cannot be had leaves those out; the preview is answered all the same.
   */
  async preview(userId: string, url: string): Promise<Record<string, string | number>> {
    if (!this.config.urlPreviews) throw errors.forbidden('URL previews are turned off on this server');
    const opts = {
      allow: this.config.urlPreviewAllowAddresses,
      maxBytes: this.config.urlPreviewMaxBytes,
      timeoutMs: this.config.urlPreviewTimeoutMs,
    };
    const page = await previewUrl(url, opts);
    const out: Record<string, string | number> = { ...page.og };
    if (page.image === undefined) return out;
    let image: { bytes: Buffer; contentType: string | undefined };
    try {
      image = await fetchPreviewImage(page.image, { ...opts, maxBytes: this.config.maxUploadBytes });
    } catch (err) {
      if (err instanceof MatrixError) return out;
      throw err;
    }
    const contentType = storedContentType(image.contentType);
    // PNG, JPEG, GIF and WebP only, as for thumbnails (never SVG, which could load other resources).
    if (!canThumbnail(essence(contentType))) return out;
    const size = await imageDimensions(image.bytes);
    if (size === undefined) return out;
    if (
      this.config.quotaBytes > 0 &&
      (await repo.usedBytes(this.db, userId)) + image.bytes.length > this.config.quotaBytes
    ) {
      return out;
    }
    const received = await this.holdBytes(image.bytes);
    const mediaId = newMediaId();
    const now = this.now();
    await this.takeIn(received, (trx) =>
      repo.insertMedia(trx, {
        media_id: mediaId,
        user_id: userId,
        created_ts: now,
        unused_expires_ts: null,
        uploaded_ts: now,
        content_type: contentType,
        upload_name: cleanFileName(path.posix.basename(new URL(page.image!).pathname) || undefined),
        size: received.size,
        sha256: received.sha256,
      }),
    );
    return {
      ...out,
      'og:image': this.mxc(mediaId),
      'og:image:type': contentType,
      'og:image:width': size.width,
      'og:image:height': size.height,
      'matrix:image:size': received.size,
    };
  }

  // ----------------------------------------------------------------------------------------
  // Media of other servers (spec/media.md, Remote media).

  /** Whether the media is another server's; 400 M_INVALID_PARAM for a malformed media ID or server name. */
  private isRemote(serverName: string, mediaId: string): boolean {
    checkMediaId(mediaId);
    if (serverName === this.serverName) return false;
    if (parseServerName(serverName) === null) throw errors.invalidParam('Not a valid server name');
    return true;
  }

  /** Whether the unauthenticated endpoints serve a media that came to this server at `ts`. */
  private legacyServes(ts: number): boolean {
    return this.config.legacyFreezeTs > 0 && ts < this.config.legacyFreezeTs;
  }

  private legacyRefused(): MatrixError {
    // Since the freeze (spec v1.11), media are served only through the authenticated endpoints.
    return errors.notFound(
      'This media is served only by the authenticated /_matrix/client/v1/media endpoints',
    );
  }

  /** The kept copy of a remote media, fetched first when there is none (and the request allows it). */
  private async remoteOriginal(origin: string, mediaId: string, opts: ReadOptions): Promise<RemoteMediaRow> {
    const kept = await this.keptRemote(origin, mediaId);
    if (kept) {
      if (opts.legacy && !this.legacyServes(Number(kept.fetched_ts))) throw this.legacyRefused();
      return kept;
    }
    if (opts.allowRemote === false)
      throw errors.notFound('This remote media is not kept here (allow_remote=false)');
    if (opts.legacy && !this.legacyServes(this.now())) throw this.legacyRefused();
    return this.shared(`${origin}\u0000${mediaId}`, async () => {
      // Another request may have kept it between the look-up above and now.
      const again = await this.keptRemote(origin, mediaId);
      if (again) return again;
      const file = await this.fetchRemote(origin, mediaId, { kind: 'download' }, opts);
      const received = await this.holdBytes(file.bytes);
      const row: RemoteMediaRow = {
        origin,
        media_id: mediaId,
        fetched_ts: this.now(),
        content_type: file.contentType,
        upload_name: cleanFileName(file.fileName),
        size: received.size,
        sha256: received.sha256,
      };
      await this.takeIn(received, (trx) => repo.insertRemoteMedia(trx, row));
      return (await this.keptRemote(origin, mediaId)) ?? row;
    });
  }

  private async keptRemote(origin: string, mediaId: string): Promise<RemoteMediaRow | undefined> {
    const row = await repo.findRemoteMedia(this.db, origin, mediaId);
    return row && (await this.store.has(row.sha256)) ? row : undefined;
  }

  /**
   * A thumbnail of a remote media: kept, else asked of its server, else made here from the
   * (fetched, kept) original. Kept per offered size, like local ones.
   */
  private async remoteThumbnail(
    origin: string,
    mediaId: string,
    opts: ThumbnailOptions,
  ): Promise<MediaContent> {
    const size = chooseSize(opts.width, opts.height, opts.method);
    const key = { origin, media_id: mediaId, ...size, animated: opts.animated };
    const kept = await repo.findRemoteThumbnail(this.db, key);
    if (kept && (await this.store.has(kept.sha256))) {
      if (opts.legacy && !this.legacyServes(Number(kept.created_ts))) throw this.legacyRefused();
      return this.servedThumbnail(kept);
    }
    const original = await this.keptRemote(origin, mediaId);
    if (!original) {
      if (opts.allowRemote === false)
        throw errors.notFound('This remote media is not kept here (allow_remote=false)');
      if (opts.legacy && !this.legacyServes(this.now())) throw this.legacyRefused();
    } else if (opts.legacy && !this.legacyServes(Number(original.fetched_ts))) throw this.legacyRefused();
    const thumb = await this.shared(
      `${origin}\u0000${mediaId}\u0000${size.width}x${size.height}\u0000${size.method}\u0000${opts.animated}`,
      async () => {
        const again = await repo.findRemoteThumbnail(this.db, key);
        if (again && (await this.store.has(again.sha256))) return again;
        let made: { tempFile: string; sha256: string; size: number; contentType: string } | undefined;
        if (!original) {
          // Asked of its server first; a server that cannot make one leaves it to us.
          try {
            const file = await this.fetchRemote(
              origin,
              mediaId,
              { kind: 'thumbnail', ...size, animated: opts.animated },
              opts,
            );
            if (canThumbnail(essence(file.contentType))) {
              made = { ...(await this.holdBytes(file.bytes)), contentType: file.contentType };
            }
          } catch (err) {
            if (!(err instanceof MatrixError)) throw err;
          }
        }
        if (!made) {
          const source = original ?? (await this.remoteOriginal(origin, mediaId, opts));
          const sourceType = essence(source.content_type);
          if (!canThumbnail(sourceType))
            throw new MatrixError(400, 'M_UNKNOWN', 'This media cannot be thumbnailed');
          made = await this.thumbnailOf(source.sha256, sourceType, size, opts.animated);
        }
        const row = {
          ...key,
          content_type: made.contentType,
          size: made.size,
          sha256: made.sha256,
          created_ts: this.now(),
        };
        const taken = made;
        await this.takeIn(taken, (trx) => repo.insertRemoteThumbnail(trx, row));
        return (await repo.findRemoteThumbnail(this.db, key)) ?? row;
      },
    );
    return this.servedThumbnail(thumb);
  }

  private async fetchRemote(
    origin: string,
    mediaId: string,
    what: Parameters<RemoteMediaFetcher['fetch']>[2],
    opts: ReadOptions,
  ): Promise<RemoteFile> {
    if (!this.fetcher) throw errors.notFound('This server does not fetch media of other servers');
    const wait = Math.min(Math.max(opts.timeoutMs ?? DEFAULT_WAIT_MS, 0), MAX_WAIT_MS);
    return this.fetcher.fetch(origin, mediaId, what, wait);
  }

  /** Runs `fn` once for every caller with the same key while it runs; they all get its outcome. */
  private shared<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.remoteFetches.get(key) as Promise<T> | undefined;
    if (running) return running;
    const started = fn().finally(() => this.remoteFetches.delete(key));
    this.remoteFetches.set(key, started);
    return started;
  }

  /** Bytes already in memory written to a temporary file of the store, hashed. */
  private async holdBytes(bytes: Buffer): Promise<{ tempFile: string; sha256: string; size: number }> {
    const tempFile = await this.store.tempPath();
    try {
      await writeFile(tempFile, bytes);
    } catch (err) {
      await this.store.discard(tempFile);
      throw err;
    }
    return { tempFile, sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
  }

  /** A thumbnail of stored bytes, in a temporary file of the store (at most two decoded at once). */
  private async thumbnailOf(
    sourceSha256: string,
    sourceType: string,
    size: ReturnType<typeof chooseSize>,
    animated: boolean,
  ): Promise<{ tempFile: string; sha256: string; size: number; contentType: string }> {
    const temp = await this.store.tempPath();
    let made: { contentType: string };
    try {
      made = await this.limitThumbnails(() =>
        makeThumbnail(this.store.localPath(sourceSha256), sourceType, size, animated, temp),
      );
    } catch {
      await this.store.discard(temp);
      throw new MatrixError(400, 'M_UNKNOWN', 'This image could not be thumbnailed');
    }
    return { ...(await hashFile(temp)), tempFile: temp, contentType: made.contentType };
  }

  // ----------------------------------------------------------------------------------------
  // Admin: the CLI and any admin API call these.

  /** Quarantines a media of this server: it is kept but no longer served. Audited. */
  async quarantineMedia(mxc: string, actor: string | null): Promise<void> {
    const mediaId = this.localMediaId(mxc);
    await this.db.transaction().execute(async (trx) => {
      if (!(await repo.setQuarantined(trx, mediaId, actor, this.now())))
        throw errors.notFound('No such media');
      await this.audit.record({ action: 'media.quarantine', actor, target: mxc }, trx);
    });
  }

  /**
   * Deletes a media of this server and its thumbnails; their files go when nothing else names
   * the same bytes. Audited.
   */
  async deleteMedia(mxc: string, actor: string | null): Promise<{ files_deleted: number }> {
    const mediaId = this.localMediaId(mxc);
    const filesDeleted = await this.db.transaction().execute(async (trx) => {
      const files = await this.removeMedia(trx, mediaId);
      if (files === undefined) throw errors.notFound('No such media');
      await this.audit.record(
        { action: 'media.delete', actor, target: mxc, details: { files_deleted: files } },
        trx,
      );
      return files;
    });
    return { files_deleted: filesDeleted };
  }

  /**
   * Deletes the media whose last referencing event was purged or deleted (retention calls this
   * after each purge and each job run): those uploaded more than `media_unreferenced_grace_ms`
   * ago, not quarantined, and not a local user's profile avatar. Media no event ever named are
   * not touched. Each deletion is audited as `media.delete` with `reason: "unreferenced"`.
   */
  async deleteUnreferenced(actor: string): Promise<{ media_deleted: number; files_deleted: number }> {
    let mediaDeleted = 0;
    let filesDeleted = 0;
    const uploadedBeforeTs = this.now() - this.config.unreferencedGraceMs;
    const seen = new Set<string>();
    for (;;) {
      const ids = (
        await refs.unreferencedMedia(this.db, { uploadedBeforeTs, serverName: this.serverName, limit: 100 })
      ).filter((id) => !seen.has(id));
      if (ids.length === 0) break;
      for (const mediaId of ids) {
        seen.add(mediaId);
        const files = await this.db.transaction().execute(async (trx) => {
          // Row-locked: an event naming it again meanwhile keeps it.
          if (!(await refs.stillUnreferenced(trx, mediaId))) return undefined;
          const files = await this.removeMedia(trx, mediaId);
          if (files === undefined) return undefined;
          await this.audit.record(
            {
              action: 'media.delete',
              actor,
              target: this.mxc(mediaId),
              details: { files_deleted: files, reason: 'unreferenced' },
            },
            trx,
          );
          return files;
        });
        if (files === undefined) continue;
        mediaDeleted++;
        filesDeleted += files;
      }
    }
    return { media_deleted: mediaDeleted, files_deleted: filesDeleted };
  }

  /** Deletes a media's row and thumbnails, and the files no other row names; undefined if unknown. */
  private async removeMedia(trx: Executor, mediaId: string): Promise<number | undefined> {
    const hashes = await repo.deleteMediaRow(trx, mediaId);
    if (hashes === undefined) return undefined;
    let filesDeleted = 0;
    for (const sha256 of [...hashes].sort()) {
      await repo.lockHash(trx, sha256);
      if (await repo.hashInUse(trx, sha256)) continue;
      await this.store.delete(sha256);
      filesDeleted++;
    }
    return filesDeleted;
  }

  /** The media a user of this server created, newest first. */
  async listUserMedia(
    userId: string,
    opts: { limit?: number; beforeTs?: number } = {},
  ): Promise<MediaInfo[]> {
    const limit = Math.min(Math.max(opts.limit ?? 100, 1), 1000);
    const rows = await repo.listUserMedia(this.db, userId, {
      limit,
      ...(opts.beforeTs !== undefined ? { beforeTs: opts.beforeTs } : {}),
    });
    return rows.map((r) => ({
      mxc: this.mxc(r.media_id),
      media_id: r.media_id,
      user_id: r.user_id,
      created_ts: Number(r.created_ts),
      uploaded: r.uploaded_ts !== null,
      content_type: r.content_type,
      upload_name: r.upload_name,
      size: r.size === null ? null : Number(r.size),
      sha256: r.sha256,
      quarantined: r.quarantined_ts !== null,
    }));
  }

  /** The media ID of an `mxc://<this server>/<id>` URI; 400 M_INVALID_PARAM for anything else. */
  localMediaId(mxc: string): string {
    const m = /^mxc:\/\/([^/]+)\/([^/]+)$/.exec(mxc);
    if (!m || !MEDIA_ID_RE.test(m[2]!)) throw errors.invalidParam('Not an mxc:// URI');
    if (m[1] !== this.serverName) throw errors.invalidParam('Not a media of this server');
    return m[2]!;
  }

  // ----------------------------------------------------------------------------------------

  private mxc(mediaId: string): string {
    return `mxc://${this.serverName}/${mediaId}`;
  }

  private expired(row: MediaRow): boolean {
    return (
      row.uploaded_ts === null &&
      row.unused_expires_ts !== null &&
      Number(row.unused_expires_ts) <= this.now()
    );
  }

  /** A servable media row (uploaded, not quarantined), after waiting for a pending upload. */
  private async readable(
    serverName: string,
    mediaId: string,
    opts: ReadOptions,
  ): Promise<MediaRow & { sha256: string }> {
    checkMediaId(mediaId);
    if (serverName !== this.serverName) throw errors.notFound('No such media on this server');
    let row = await repo.findMedia(this.db, mediaId);
    if (row && row.uploaded_ts === null && !this.expired(row)) {
      const wait = Math.min(Math.max(opts.timeoutMs ?? DEFAULT_WAIT_MS, 0), MAX_WAIT_MS);
      row = await this.waitForUpload(mediaId, wait);
      if (row && row.uploaded_ts === null && !this.expired(row)) throw notYetUploaded();
    }
    if (!row || row.uploaded_ts === null || row.sha256 === null || row.quarantined_ts !== null) {
      throw errors.notFound('No such media');
    }
    if (opts.legacy && !this.legacyServes(Number(row.created_ts))) throw this.legacyRefused();
    return row as MediaRow & { sha256: string };
  }

  /** Waits until the media is uploaded (told over the bus) or the time runs out; returns its row then. */
  private async waitForUpload(mediaId: string, ms: number): Promise<MediaRow | undefined> {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => {
      wake = resolve;
    });
    let set = this.waiters.get(mediaId);
    if (!set) {
      set = new Set();
      this.waiters.set(mediaId, set);
    }
    set.add(wake);
    const timer = setTimeout(wake, ms);
    try {
      // Read again after listening, so an upload that landed just before is not missed.
      const row = await repo.findMedia(this.db, mediaId);
      if (row?.uploaded_ts === null) await woken;
      else return row;
    } finally {
      clearTimeout(timer);
      set.delete(wake);
      if (set.size === 0) this.waiters.delete(mediaId);
    }
    return repo.findMedia(this.db, mediaId);
  }

  private wake(mediaId: string): void {
    for (const wake of this.waiters.get(mediaId) ?? []) wake();
  }

  /**
   * Streams an upload to a temporary file while hashing and counting it; refuses it (413, or the
   * quota's 403) as soon as it grows past the limit, and discards the partial file.
   */
  private async receive(
    userId: string,
    body: Readable,
    declaredLength: number | undefined,
  ): Promise<{ tempFile: string; sha256: string; size: number }> {
    const max = this.config.maxUploadBytes;
    const tooLarge = () => errors.tooLarge(`Uploads may not exceed ${max} bytes`);
    let quotaLeft = Number.POSITIVE_INFINITY;
    if (this.config.quotaBytes > 0) {
      quotaLeft = this.config.quotaBytes - (await repo.usedBytes(this.db, userId));
    }
    if (declaredLength !== undefined && declaredLength > max) throw tooLarge();
    if (declaredLength !== undefined && declaredLength > quotaLeft) throw quotaExceeded();
    const tempFile = await this.store.tempPath();
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        if (size > max) return callback(tooLarge());
        if (size > quotaLeft) return callback(quotaExceeded());
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    try {
      await pipeline(body, meter, createWriteStream(tempFile));
    } catch (err) {
      await this.store.discard(tempFile);
      if (err instanceof MatrixError) throw err;
      throw new MatrixError(400, 'M_UNKNOWN', 'The upload was interrupted');
    }
    return { tempFile, sha256: hash.digest('hex'), size };
  }

  /**
   * Records bytes received in a temporary file: under the lock of their hash, `record` writes the
   * row that names them and the store takes the file in (or keeps the copy it has).
   */
  private async takeIn(
    received: { tempFile: string; sha256: string },
    record: (trx: Executor) => Promise<void>,
  ): Promise<void> {
    try {
      await this.db.transaction().execute(async (trx) => {
        await repo.lockHash(trx, received.sha256);
        await record(trx);
        await this.store.put(received.sha256, received.tempFile);
      });
    } finally {
      await this.store.discard(received.tempFile);
    }
  }

  private async limitThumbnails<T>(fn: () => Promise<T>): Promise<T> {
    // At most THUMBNAIL_CONCURRENCY images are decoded at once; a finishing one hands its turn on.
    if (this.thumbnailsRunning >= THUMBNAIL_CONCURRENCY) {
      await new Promise<void>((resolve) => this.thumbnailQueue.push(resolve));
    } else {
      this.thumbnailsRunning++;
    }
    try {
      return await fn();
    } finally {
      const next = this.thumbnailQueue.shift();
      if (next) next();
      else this.thumbnailsRunning--;
    }
  }
}

function newMediaId(): string {
  return randomBytes(18).toString('base64url');
}

function checkMediaId(mediaId: string): void {
  if (!MEDIA_ID_RE.test(mediaId)) throw errors.invalidParam('Not a valid media ID');
}

/** The file name a client gave, without path separators or control characters, at most 255 characters. */
function cleanFileName(name: string | undefined): string | null {
  if (name === undefined) return null;
  let cleaned = '';
  for (const ch of name.slice(0, 255))
    cleaned += hasControlCharacter(ch) || ch === '/' || ch === '\\' ? '_' : ch;
  return cleaned === '' ? null : cleaned;
}

async function hashFile(file: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}
