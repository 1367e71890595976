import sharp from 'sharp';

/**
 * Thumbnails, made by sharp (libvips). The sizes offered are the ones clients ask for (avatars
 * at 32 and 96 pixels cropped, previews up to 800x600 scaled); a request gets the smallest offered
 * size at least as large as it asked, or the largest. Only PNG, JPEG, GIF and WebP are thumbnailed:
 * never SVG (it could load other resources) nor anything else.
 */
export type ThumbnailMethod = 'crop' | 'scale';

export interface ThumbnailSize {
  width: number;
  height: number;
  method: ThumbnailMethod;
}

export const THUMBNAIL_SIZES: readonly ThumbnailSize[] = [
  { width: 32, height: 32, method: 'crop' },
  { width: 96, height: 96, method: 'crop' },
  { width: 320, height: 240, method: 'scale' },
  { width: 640, height: 480, method: 'scale' },
  { width: 800, height: 600, method: 'scale' },
];

const THUMBNAILABLE = new Map<string, 'png' | 'jpeg' | 'gif' | 'webp'>([
  ['image/png', 'png'],
  ['image/jpeg', 'jpeg'],
  ['image/jpg', 'jpeg'],
  ['image/gif', 'gif'],
  ['image/webp', 'webp'],
]);

/** Images larger than this many pixels are not decoded (a small file can describe a huge image). */
export const MAX_INPUT_PIXELS = 40_000_000;

export function canThumbnail(contentType: string): boolean {
  return THUMBNAILABLE.has(contentType);
}

/** The offered size a request gets: same method first, the smallest that covers it, else the largest. */
export function chooseSize(width: number, height: number, method: ThumbnailMethod): ThumbnailSize {
  const ranked = [...THUMBNAIL_SIZES].sort(
    (a, b) =>
      Number(b.method === method) - Number(a.method === method) || a.width * a.height - b.width * b.height,
  );
  const sameMethod = ranked.filter((s) => s.method === method);
  return (
    sameMethod.find((s) => s.width >= width && s.height >= height) ??
    ranked.find((s) => s.width >= width && s.height >= height) ??
    sameMethod.at(-1) ??
    ranked.at(-1)!
  );
}

/**
 * Writes a thumbnail of the image at `input` to `output`; returns its media type. `animated`
 * keeps the frames of an animated GIF or WebP (as the same format); otherwise the first frame is
 * used and a GIF becomes a PNG. Throws when the image cannot be decoded.
 */
export async function makeThumbnail(
  input: string,
  sourceType: string,
  size: ThumbnailSize,
  animated: boolean,
  output: string,
): Promise<{ contentType: string }> {
  const format = THUMBNAILABLE.get(sourceType);
  if (!format) throw new Error('not a thumbnailable type');
  const keepFrames = animated && (format === 'gif' || format === 'webp');
  let image = sharp(input, { animated: keepFrames, limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' });
  if (!keepFrames) image = image.rotate(); // honour EXIF orientation
  image = image.resize(size.width, size.height, {
    fit: size.method === 'crop' ? 'cover' : 'inside',
    withoutEnlargement: size.method === 'scale',
  });
  const out = keepFrames ? format : format === 'gif' ? 'png' : format;
  switch (out) {
    case 'jpeg':
      image = image.jpeg({ quality: 80 });
      break;
    case 'webp':
      image = image.webp({ quality: 80 });
      break;
    case 'gif':
      image = image.gif();
      break;
    default:
      image = image.png();
  }
  await image.toFile(output);
  return { contentType: `image/${out}` };
}

/** The width and height of an image in memory; undefined when sharp cannot read it. */
export async function imageDimensions(bytes: Buffer): Promise<{ width: number; height: number } | undefined> {
  try {
    const meta = await sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS }).metadata();
    return meta.width && meta.height ? { width: meta.width, height: meta.height } : undefined;
  } catch {
    return undefined;
  }
}
