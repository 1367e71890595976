import {
  AttachmentError,
  type AttachmentView,
  decryptAttachment,
  downloadUrl,
  type EncryptedFile,
  encryptAttachment,
  fileMessageContent,
  type ImageInfo,
  PREVIEWABLE_IMAGES,
  type SentFile,
  thumbnailUrl,
  type UploadError,
  uploadErrorOf,
} from './attachments.ts';

/** A file on its way into a room, as the composer shows it until its message is sent. */
export interface Upload {
  id: string;
  roomId: string;
  name: string;
  size: number;
  /** Bytes sent so far (of the ciphertext in an encrypted room: the same length). */
  loaded: number;
  phase: 'preparing' | 'uploading' | 'sending' | 'failed';
  error: UploadError | null;
}

export type MediaFailure = 'bad-hash' | 'bad-file' | 'not-found' | 'failed';

/** Thrown by downloads: why the file could not be shown or saved. */
export class MediaError extends Error {
  constructor(readonly reason: MediaFailure) {
    super(reason);
  }
}

/** Sender-made thumbnails (encrypted rooms only) fit in this box, as the server's do. */
const THUMBNAIL = { width: 800, height: 600 };
/** An encrypted image with no thumbnail is shown from its full file up to this size. */
const MAX_FULL_PREVIEW = 20 * 1024 * 1024;
/** Decrypted or downloaded files kept for the session, in bytes at most. */
const CACHE_BYTES = 64 * 1024 * 1024;

interface MediaDeps {
  baseUrl: string;
  accessToken(): string;
  isEncrypted(roomId: string): boolean;
  sendMessage(roomId: string, content: Record<string, unknown>): Promise<void>;
  changed(): void;
}

/**
 * The media repository from the browser: uploads with progress (XMLHttpRequest, which reports
 * it; fetch does not), encrypted in encrypted rooms, and downloads with the access token in the
 * Authorization header (authenticated media: an <img src> cannot send it, so the bytes are
 * fetched and shown through blob: URLs). Blobs are cached by URL within a byte budget.
 */
export class Media {
  private uploads: Upload[] = [];
  private aborts = new Map<string, () => void>();
  private cancelled = new Set<string>();
  /** The files of failed uploads, to send again. */
  private failedFiles = new Map<string, File>();
  private configPromise: Promise<{ available: boolean; maxUpload: number | null }> | null = null;
  private cache = new Map<string, Promise<Blob>>();
  private cachedBytes = new Map<string, number>();
  private nextId = 0;

  constructor(private readonly deps: MediaDeps) {}

  /** The server's media config; `available` is false when it has no media repository. */
  config(): Promise<{ available: boolean; maxUpload: number | null }> {
    this.configPromise ??= fetch(`${this.deps.baseUrl}/_matrix/client/v1/media/config`, {
      headers: { authorization: `Bearer ${this.deps.accessToken()}` },
    }).then(
      async (res) => {
        if (!res.ok) return { available: res.status !== 404, maxUpload: null };
        const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
        const max = body['m.upload.size'];
        return { available: true, maxUpload: typeof max === 'number' && max > 0 ? max : null };
      },
      () => {
        this.configPromise = null;
        return { available: true, maxUpload: null };
      },
    );
    return this.configPromise;
  }

  /** The uploads of a room that are not sent yet (or failed and not dismissed). */
  uploadsOf(roomId: string): Upload[] {
    return this.uploads.filter((u) => u.roomId === roomId);
  }

  /** Cancels an upload in progress, or dismisses a failed one. */
  cancel(id: string): void {
    this.cancelled.add(id);
    this.aborts.get(id)?.();
    this.aborts.delete(id);
    this.failedFiles.delete(id);
    this.uploads = this.uploads.filter((u) => u.id !== id);
    this.deps.changed();
  }

  /** Sends a failed upload's file again (as a new upload, in place of the failed one). */
  retry(id: string): void {
    const u = this.uploads.find((x) => x.id === id);
    const file = this.failedFiles.get(id);
    if (!u || !file) return;
    this.cancel(id);
    void this.send(u.roomId, file);
  }

  /** Whether sending the same file again may work (not when the server said it is too large). */
  canRetry(u: Upload): boolean {
    return u.phase === 'failed' && this.failedFiles.has(u.id) && u.error?.kind !== 'too-large';
  }

  private update(id: string, patch: Partial<Upload>): void {
    this.uploads = this.uploads.map((u) => (u.id === id ? { ...u, ...patch } : u));
    this.deps.changed();
  }

  /**
   * Sends a file to a room: checks the server's size limit, reads an image's size (and, in an
   * encrypted room, makes a thumbnail, since the server cannot read the image), encrypts in an
   * encrypted room, uploads with progress, then sends the m.image or m.file message. Failures
   * stay listed with their reason until dismissed.
   */
  async send(roomId: string, file: File): Promise<void> {
    const id = `upload-${++this.nextId}`;
    const name = file.name || 'file';
    this.uploads = [
      ...this.uploads,
      { id, roomId, name, size: file.size, loaded: 0, phase: 'preparing', error: null },
    ];
    this.deps.changed();
    const cancelled = () => this.cancelled.has(id);
    const fail = (error: UploadError) => {
      this.aborts.delete(id);
      if (cancelled()) return;
      this.failedFiles.set(id, file);
      this.update(id, { phase: 'failed', error });
    };
    try {
      const { available, maxUpload } = await this.config();
      if (!available) return fail({ kind: 'unavailable' });
      if (maxUpload !== null && file.size > maxUpload) return fail({ kind: 'too-large', limit: maxUpload });
      const mimetype = (file.type || 'application/octet-stream').toLowerCase();
      const encrypted = this.deps.isEncrypted(roomId);
      const image = PREVIEWABLE_IMAGES.includes(mimetype) ? await imageSize(file) : null;
      const sent: SentFile = { name, mimetype, size: file.size, image };
      if (encrypted && image && (image.w > THUMBNAIL.width || image.h > THUMBNAIL.height)) {
        const thumb = await makeThumbnail(file, image);
        if (thumb && !cancelled()) {
          const enc = await encryptAttachment(await thumb.blob.arrayBuffer());
          const url = await this.upload(id, new Blob([enc.data]), 'application/octet-stream', null, false);
          sent.thumbnail = {
            info: { w: thumb.w, h: thumb.h, mimetype: thumb.blob.type, size: thumb.blob.size },
            file: { ...enc.file, url },
          };
        }
      }
      if (cancelled()) return;
      this.update(id, { phase: 'uploading' });
      if (encrypted) {
        const enc = await encryptAttachment(await file.arrayBuffer());
        // No file name and no type: the server learns only the ciphertext's length.
        const url = await this.upload(id, new Blob([enc.data]), 'application/octet-stream', null, true);
        sent.file = { ...enc.file, url } satisfies EncryptedFile;
      } else {
        sent.url = await this.upload(id, file, mimetype, name, true);
      }
      if (cancelled()) return;
      this.update(id, { phase: 'sending' });
      await this.deps.sendMessage(roomId, fileMessageContent(sent));
      this.aborts.delete(id);
      this.uploads = this.uploads.filter((u) => u.id !== id);
      this.deps.changed();
    } catch (err) {
      if (err instanceof UploadFailure) return fail(err.error);
      fail({ kind: 'other', message: (err as Error).message });
    }
  }

  /** POST /_matrix/media/v3/upload; resolves with the content URI. */
  private upload(
    id: string,
    body: Blob,
    type: string,
    filename: string | null,
    reportProgress: boolean,
  ): Promise<string> {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const query = filename ? `?filename=${encodeURIComponent(filename)}` : '';
      xhr.open('POST', `${this.deps.baseUrl}/_matrix/media/v3/upload${query}`);
      xhr.setRequestHeader('authorization', `Bearer ${this.deps.accessToken()}`);
      xhr.setRequestHeader('content-type', type);
      if (reportProgress) {
        xhr.upload.onprogress = (e) => this.update(id, { loaded: e.loaded });
      }
      xhr.onload = () => {
        let parsed: unknown = null;
        try {
          parsed = JSON.parse(xhr.responseText);
        } catch {
          // not JSON: classified by its status below
        }
        const uri = (parsed as { content_uri?: unknown } | null)?.content_uri;
        if (xhr.status === 200 && typeof uri === 'string') resolve(uri);
        else reject(new UploadFailure(uploadErrorOf(xhr.status, parsed, null)));
      };
      xhr.onerror = () => reject(new UploadFailure({ kind: 'network' }));
      xhr.onabort = () => reject(new UploadFailure({ kind: 'other', message: 'cancelled' }));
      this.aborts.set(id, () => xhr.abort());
      xhr.send(body);
    }).then(
      (uri) => uri as string,
      async (err) => {
        // The server's limit, to say it in the message, when it refused the size: read again,
        // as the limit this client knew let the file through (the server's may have changed).
        if (err instanceof UploadFailure && err.error.kind === 'too-large') {
          this.configPromise = null;
          const { maxUpload } = await this.config();
          throw new UploadFailure({ kind: 'too-large', limit: maxUpload });
        }
        throw err;
      },
    );
  }

  // Downloads

  private fetchBlob(url: string): Promise<Blob> {
    const cached = this.cache.get(url);
    if (cached) {
      // Most recently used last.
      this.cache.delete(url);
      this.cache.set(url, cached);
      return cached;
    }
    const p = fetch(url, { headers: { authorization: `Bearer ${this.deps.accessToken()}` } }).then(
      async (res) => {
        if (res.status === 404) throw new MediaError('not-found');
        if (!res.ok) throw new MediaError('failed');
        const blob = await res.blob();
        this.cachedBytes.set(url, blob.size);
        this.evict();
        return blob;
      },
    );
    p.catch(() => {
      this.cache.delete(url);
      this.cachedBytes.delete(url);
    });
    this.cache.set(url, p);
    return p;
  }

  private evict(): void {
    let total = 0;
    for (const n of this.cachedBytes.values()) total += n;
    for (const url of this.cache.keys()) {
      if (total <= CACHE_BYTES) break;
      total -= this.cachedBytes.get(url) ?? 0;
      this.cache.delete(url);
      this.cachedBytes.delete(url);
    }
  }

  /** The plaintext of a source: downloaded, and in an encrypted room checked and decrypted. */
  private async bytesOf(url: string, file: EncryptedFile | null): Promise<Blob> {
    const blob = await this.fetchBlob(url);
    if (!file) return blob;
    try {
      return new Blob([await decryptAttachment(await blob.arrayBuffer(), file)]);
    } catch (err) {
      throw new MediaError(err instanceof AttachmentError ? err.reason : 'failed');
    }
  }

  /**
   * The image to show inline, typed as one of the safe image types: the server's thumbnail of an
   * unencrypted image, the sender's thumbnail of an encrypted one, or else the full file when
   * not too large. Null when there is nothing that can be shown.
   */
  async preview(a: AttachmentView): Promise<Blob | null> {
    const type = a.mimetype && PREVIEWABLE_IMAGES.includes(a.mimetype) ? a.mimetype : null;
    if (!type) return null;
    const base = this.deps.baseUrl;
    if (!a.source.file) {
      const url = thumbnailUrl(base, a.source.mxc, THUMBNAIL.width, THUMBNAIL.height);
      if (!url) return null;
      // A thumbnail keeps the type (a GIF's becomes PNG): typed by what the server says.
      const blob = await this.fetchBlob(url).catch(async (err) => {
        if (err instanceof MediaError && err.reason === 'not-found') throw err;
        // No thumbnail (an image the server does not decode): the file itself, if small.
        if (a.size !== null && a.size > MAX_FULL_PREVIEW) throw err;
        return this.fetchBlob(downloadUrl(base, a.source.mxc)!);
      });
      return PREVIEWABLE_IMAGES.includes(blob.type) ? blob : new Blob([blob], { type });
    }
    const thumb = a.thumbnail;
    if (thumb?.file && thumb.mimetype && PREVIEWABLE_IMAGES.includes(thumb.mimetype)) {
      const url = downloadUrl(base, thumb.mxc);
      if (url) return new Blob([await this.bytesOf(url, thumb.file)], { type: thumb.mimetype });
    }
    if (a.size !== null && a.size > MAX_FULL_PREVIEW) return null;
    const url = downloadUrl(base, a.source.mxc);
    return url ? new Blob([await this.bytesOf(url, a.source.file)], { type }) : null;
  }

  /**
   * The file's bytes for saving, typed application/octet-stream whatever it claims to be: a
   * blob: URL is of this page's origin, so it must never be opened as HTML or SVG.
   */
  async download(a: AttachmentView): Promise<Blob> {
    const url = downloadUrl(this.deps.baseUrl, a.source.mxc);
    if (!url) throw new MediaError('bad-file');
    return new Blob([await this.bytesOf(url, a.source.file)], { type: 'application/octet-stream' });
  }
}

class UploadFailure extends Error {
  constructor(readonly error: UploadError) {
    super(error.kind);
  }
}

/** The pixel size of an image the browser can decode; null when it cannot. */
async function imageSize(file: Blob): Promise<ImageInfo | null> {
  try {
    const bitmap = await createImageBitmap(file);
    const size = { w: bitmap.width, h: bitmap.height };
    bitmap.close();
    return size;
  } catch {
    return null;
  }
}

/** A JPEG (PNG for images that may be transparent) scaled to fit the thumbnail box. */
async function makeThumbnail(
  file: Blob,
  size: ImageInfo,
): Promise<{ blob: Blob; w: number; h: number } | null> {
  try {
    const scale = Math.min(THUMBNAIL.width / size.w, THUMBNAIL.height / size.h, 1);
    const w = Math.max(1, Math.round(size.w * scale));
    const h = Math.max(1, Math.round(size.h * scale));
    const bitmap = await createImageBitmap(file, { resizeWidth: w, resizeHeight: h, resizeQuality: 'high' });
    const canvas = new OffscreenCanvas(w, h);
    canvas.getContext('2d')?.drawImage(bitmap, 0, 0);
    bitmap.close();
    const type = file.type === 'image/jpeg' ? 'image/jpeg' : 'image/png';
    const blob = await canvas.convertToBlob({ type, quality: 0.85 });
    return { blob, w, h };
  } catch {
    return null;
  }
}
