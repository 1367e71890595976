import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  AttachmentError,
  attachmentOf,
  decodeBase64,
  decryptAttachment,
  downloadUrl,
  type EncryptedFile,
  encodeBase64,
  encryptAttachment,
  fileMessageContent,
  formatBytes,
  isPreviewable,
  parseMxc,
  readEncryptedFile,
  thumbnailUrl,
  uploadErrorOf,
} from '../src/matrix/attachments.ts';

const plaintext = new TextEncoder().encode('assay results, week 12\n'.repeat(100));
const b64 = (buf: Buffer) => buf.toString('base64').replace(/=+$/, '');
const b64url = (buf: Buffer) => buf.toString('base64url');

describe('encrypted attachments (AES-CTR 256, SHA-256 of the ciphertext, v2)', () => {
  it('encrypts to a ciphertext that node:crypto decrypts with the JWK and IV given', async () => {
    const { data, file } = await encryptAttachment(plaintext.slice().buffer);
    const cipher = Buffer.from(data);
    expect(cipher.length).toBe(plaintext.length);
    expect(cipher.equals(Buffer.from(plaintext))).toBe(false);
    expect(file.v).toBe('v2');
    expect(file.key).toMatchObject({ kty: 'oct', alg: 'A256CTR', ext: true });
    expect(file.key.key_ops).toEqual(expect.arrayContaining(['encrypt', 'decrypt']));
    const key = Buffer.from(file.key.k, 'base64url');
    const iv = Buffer.from(file.iv, 'base64');
    expect(key.length).toBe(32);
    expect(iv.length).toBe(16);
    expect(iv.subarray(8).equals(Buffer.alloc(8)), 'the block counter starts at zero').toBe(true);
    expect(file.iv).not.toMatch(/=/);
    expect(file.hashes.sha256).toBe(b64(createHash('sha256').update(cipher).digest()));
    const decipher = createDecipheriv('aes-256-ctr', key, iv);
    const back = Buffer.concat([decipher.update(cipher), decipher.final()]);
    expect(back.equals(Buffer.from(plaintext))).toBe(true);
  });

  it('uses a new key and IV for every file', async () => {
    const a = await encryptAttachment(plaintext.slice().buffer);
    const b = await encryptAttachment(plaintext.slice().buffer);
    expect(a.file.key.k).not.toBe(b.file.key.k);
    expect(a.file.iv).not.toBe(b.file.iv);
  });

  it('decrypts a file that node:crypto encrypted, after checking its hash', async () => {
    const key = randomBytes(32);
    const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
    const cipher = createCipheriv('aes-256-ctr', key, iv);
    const data = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const file: EncryptedFile = {
      url: 'mxc://example.org/abc',
      key: { kty: 'oct', key_ops: ['encrypt', 'decrypt'], alg: 'A256CTR', k: b64url(key), ext: true },
      iv: b64(iv),
      hashes: { sha256: b64(createHash('sha256').update(data).digest()) },
      v: 'v2',
    };
    const out = await decryptAttachment(new Uint8Array(data).buffer, file);
    expect(Buffer.from(out).equals(Buffer.from(plaintext))).toBe(true);
  });

  it('refuses a ciphertext whose hash does not match, and a file object it cannot use', async () => {
    const { data, file } = await encryptAttachment(plaintext.slice().buffer);
    const changed = new Uint8Array(data.slice(0));
    changed[10]! ^= 1;
    const full = { ...file, url: 'mxc://example.org/abc' };
    await expect(decryptAttachment(changed.buffer, full)).rejects.toEqual(new AttachmentError('bad-hash'));
    await expect(decryptAttachment(data, { ...full, v: 'v1' as 'v2' })).rejects.toEqual(
      new AttachmentError('bad-file'),
    );
    await expect(decryptAttachment(data, { ...full, iv: 'AAAA' })).rejects.toEqual(
      new AttachmentError('bad-file'),
    );
  });

  it('reads the file object only when every required field is there', async () => {
    const { file } = await encryptAttachment(new Uint8Array([1, 2, 3]).buffer);
    const full = { ...file, url: 'mxc://example.org/abc' };
    expect(readEncryptedFile(full)).toEqual(full);
    expect(readEncryptedFile({ ...full, url: 'https://example.org/x' })).toBeNull();
    expect(readEncryptedFile({ ...full, hashes: {} })).toBeNull();
    expect(readEncryptedFile({ ...full, key: { ...full.key, alg: 'A128CTR' } })).toBeNull();
    expect(readEncryptedFile({ ...full, key: { ...full.key, key_ops: ['encrypt'] } })).toBeNull();
    expect(readEncryptedFile({ ...full, v: 'v1' })).toBeNull();
    expect(readEncryptedFile(null)).toBeNull();
  });
});

describe('base64 as Matrix writes it', () => {
  it('round-trips both alphabets, unpadded, and rejects what is not base64', () => {
    const bytes = new Uint8Array([0xfb, 0xff, 0xfe, 1]);
    expect(encodeBase64(bytes)).toBe('+//+AQ');
    expect(encodeBase64(bytes, true)).toBe('-__-AQ');
    expect([...decodeBase64('+//+AQ')!]).toEqual([...bytes]);
    expect([...decodeBase64('-__-AQ==')!]).toEqual([...bytes]);
    expect(decodeBase64('no spaces')).toBeNull();
    expect(decodeBase64('A')).toBeNull();
  });
});

describe('content URIs', () => {
  it('parses mxc:// URIs and builds the authenticated media URLs', () => {
    expect(parseMxc('mxc://example.org/AbC_-1')).toEqual({ serverName: 'example.org', mediaId: 'AbC_-1' });
    expect(parseMxc('mxc://example.org/../x')).toBeNull();
    expect(parseMxc('mxc://example.org/a/b')).toBeNull();
    expect(parseMxc('http://example.org/a')).toBeNull();
    expect(parseMxc(42)).toBeNull();
    expect(downloadUrl('https://hs', 'mxc://example.org:8448/id')).toBe(
      'https://hs/_matrix/client/v1/media/download/example.org%3A8448/id',
    );
    expect(thumbnailUrl('', 'mxc://s/id', 800, 600)).toBe(
      '/_matrix/client/v1/media/thumbnail/s/id?width=800&height=600&method=scale',
    );
    expect(downloadUrl('', 'javascript:alert(1)')).toBeNull();
  });
});

describe('file messages', () => {
  it('sends m.image with mimetype, size and dimensions, and m.file for other files', () => {
    expect(
      fileMessageContent({
        name: 'gel.png',
        mimetype: 'image/png',
        size: 1234,
        image: { w: 64, h: 48 },
        url: 'mxc://s/img',
      }),
    ).toEqual({
      msgtype: 'm.image',
      body: 'gel.png',
      filename: 'gel.png',
      info: { mimetype: 'image/png', size: 1234, w: 64, h: 48 },
      url: 'mxc://s/img',
    });
    const pdf = fileMessageContent({
      name: 'paper.pdf',
      mimetype: 'application/pdf',
      size: 99,
      image: null,
      url: 'mxc://s/pdf',
    });
    expect(pdf.msgtype).toBe('m.file');
    expect(pdf.info).toEqual({ mimetype: 'application/pdf', size: 99 });
    // An SVG is sent as a file, never as an image to show.
    expect(
      fileMessageContent({
        name: 'x.svg',
        mimetype: 'image/svg+xml',
        size: 1,
        image: { w: 1, h: 1 },
        url: 'mxc://s/x',
      }).msgtype,
    ).toBe('m.file');
  });

  it('in an encrypted room: `file` instead of `url`, and the thumbnail as thumbnail_file', async () => {
    const { file } = await encryptAttachment(new Uint8Array([1]).buffer);
    const f = { ...file, url: 'mxc://s/f' };
    const t = { ...file, url: 'mxc://s/t' };
    const content = fileMessageContent({
      name: 'big.jpg',
      mimetype: 'image/jpeg',
      size: 5000,
      image: { w: 4000, h: 3000 },
      file: f,
      thumbnail: { info: { w: 800, h: 600, mimetype: 'image/jpeg', size: 100 }, file: t },
    });
    expect(content.url).toBeUndefined();
    expect(content.file).toEqual(f);
    expect((content.info as Record<string, unknown>).thumbnail_file).toEqual(t);
    const view = attachmentOf(content)!;
    expect(view.source).toEqual({ mxc: 'mxc://s/f', file: f });
    expect(view.thumbnail).toEqual({ mxc: 'mxc://s/t', file: t, mimetype: 'image/jpeg' });
    expect(view).toMatchObject({ kind: 'image', name: 'big.jpg', width: 4000, height: 3000, size: 5000 });
    expect(isPreviewable(view)).toBe(true);
  });

  it('reads what other clients send, defensively', () => {
    expect(attachmentOf({ msgtype: 'm.text', body: 'hi' })).toBeNull();
    expect(attachmentOf({ msgtype: 'm.file', body: 'x' }), 'no source').toBeNull();
    expect(attachmentOf({ msgtype: 'm.image', body: 'x', url: 'https://evil/x.png' })).toBeNull();
    expect(
      attachmentOf({ msgtype: 'm.file', body: 'x', file: { url: 'mxc://s/a' } }),
      'incomplete file',
    ).toBeNull();
    const caption = attachmentOf({
      msgtype: 'm.image',
      body: 'the gel after 2 h',
      filename: 'gel.png',
      url: 'mxc://s/a',
      info: { mimetype: 'IMAGE/PNG', size: -3, w: 1.5, h: 'x' },
    })!;
    expect(caption).toMatchObject({
      name: 'gel.png',
      caption: 'the gel after 2 h',
      mimetype: 'image/png',
      size: null,
      width: null,
      height: null,
    });
    const svg = attachmentOf({
      msgtype: 'm.image',
      body: 'a.svg',
      url: 'mxc://s/a',
      info: { mimetype: 'image/svg+xml' },
    })!;
    expect(isPreviewable(svg), 'SVG is offered for download only').toBe(false);
    expect(attachmentOf({ msgtype: 'm.video', body: 'v.mp4', url: 'mxc://s/v' })?.kind).toBe('file');
  });
});

describe('upload errors', () => {
  it('says what the server refused', () => {
    expect(uploadErrorOf(413, { errcode: 'M_TOO_LARGE', error: 'x' }, 1024)).toEqual({
      kind: 'too-large',
      limit: 1024,
    });
    expect(uploadErrorOf(403, { errcode: 'M_RESOURCE_LIMIT_EXCEEDED', admin_contact: '' }, null)).toEqual({
      kind: 'quota',
    });
    expect(uploadErrorOf(429, { errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: 10 }, null).kind).toBe(
      'rate-limited',
    );
    expect(uploadErrorOf(404, { errcode: 'M_UNRECOGNIZED' }, null).kind).toBe('unavailable');
    expect(uploadErrorOf(0, null, null).kind).toBe('network');
    expect(uploadErrorOf(500, 'not json', null)).toEqual({ kind: 'other', message: 'HTTP 500' });
    expect(uploadErrorOf(403, { errcode: 'M_FORBIDDEN', error: 'Locked' }, null)).toEqual({
      kind: 'other',
      message: 'Locked',
    });
  });

  it('formats sizes in the UI language', () => {
    expect(formatBytes(512, 'en')).toBe('512 bytes');
    expect(formatBytes(512, 'fr')).toMatch(/^512\s+octets$/);
    expect(formatBytes(200_000, 'en')).toBe('200 kB');
    expect(formatBytes(1_500_000, 'en')).toBe('1.5 MB');
    expect(formatBytes(1_500_000, 'fr')).toMatch(/^1,5\s+Mo$/);
  });
});
