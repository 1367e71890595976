import { randomBytes } from 'node:crypto';
import { createReadStream, type ReadStream } from 'node:fs';
import { access, link, mkdir, rm, stat, unlink } from 'node:fs/promises';
import path from 'node:path';

/**
 * Where the bytes of media live, content-addressed: a file is named by the SHA-256 of its bytes,
 * so identical uploads share one copy. The media service decides when a hash is no longer named
 * by any media or thumbnail and may be deleted; a store only keeps bytes. Another store (an
 * object store, say) implements this interface.
 */
export interface MediaStore {
  /** A fresh path for incoming bytes; the caller writes it, then hands it to put() or discards it. */
  tempPath(): Promise<string>;
  /** Takes in a finished temporary file under its hash (kept as it is if that hash is already stored). */
  put(sha256: string, tempFile: string): Promise<void>;
  has(sha256: string): Promise<boolean>;
  /** The stored bytes, streamed. */
  open(sha256: string): ReadStream;
  /** A local path to read the bytes from (for the image library); the file must not be changed. */
  localPath(sha256: string): string;
  size(sha256: string): Promise<number>;
  delete(sha256: string): Promise<void>;
  /** Removes a temporary file that was not put (a failed or refused upload). */
  discard(tempFile: string): Promise<void>;
}

const SHA256_RE = /^[0-9a-f]{64}$/;

/** Files on local disk: `<root>/ab/cd/<hash>`, temporary files in `<root>/tmp`. */
export class FileMediaStore implements MediaStore {
  constructor(private readonly root: string) {}

  async init(): Promise<void> {
    await mkdir(path.join(this.root, 'tmp'), { recursive: true });
  }

  async tempPath(): Promise<string> {
    return path.join(this.root, 'tmp', `${Date.now()}-${randomBytes(8).toString('hex')}`);
  }

  localPath(sha256: string): string {
    if (!SHA256_RE.test(sha256)) throw new Error('not a SHA-256 in hex');
    return path.join(this.root, sha256.slice(0, 2), sha256.slice(2, 4), sha256);
  }

  async put(sha256: string, tempFile: string): Promise<void> {
    const target = this.localPath(sha256);
    await mkdir(path.dirname(target), { recursive: true });
    try {
      // A hard link never replaces an existing file: the first copy of these bytes stays.
      await link(tempFile, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      await rm(tempFile, { force: true });
    }
  }

  async has(sha256: string): Promise<boolean> {
    try {
      await access(this.localPath(sha256));
      return true;
    } catch {
      return false;
    }
  }

  open(sha256: string): ReadStream {
    return createReadStream(this.localPath(sha256));
  }

  async size(sha256: string): Promise<number> {
    return (await stat(this.localPath(sha256))).size;
  }

  async delete(sha256: string): Promise<void> {
    try {
      await unlink(this.localPath(sha256));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  async discard(tempFile: string): Promise<void> {
    await rm(tempFile, { force: true });
  }
}
