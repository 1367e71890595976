import { useEffect, useState } from 'react';
import { type Translate, useI18n } from '../i18n/index.ts';
import { type AttachmentView, formatBytes, isPreviewable, type UploadError } from '../matrix/attachments.ts';
import type { ConclaveClient } from '../matrix/client.ts';
import { MediaError, type MediaFailure, type Upload } from '../matrix/media.ts';

function failureText(t: Translate, reason: MediaFailure): string {
  switch (reason) {
    case 'bad-hash':
      return t('attachmentBadHash');
    case 'bad-file':
      return t('attachmentBadFile');
    case 'not-found':
      return t('attachmentNotFound');
    default:
      return t('attachmentFailed');
  }
}

const reasonOf = (err: unknown): MediaFailure => (err instanceof MediaError ? err.reason : 'failed');

/** An image preview (fetched with the token, shown from a blob: URL) and a download button. */
export function Attachment(props: { client: ConclaveClient; attachment: AttachmentView }) {
  const { t, language } = useI18n();
  const a = props.attachment;
  const previewable = isPreviewable(a);
  const [src, setSrc] = useState<string | null>(null);
  const [previewError, setPreviewError] = useState<MediaFailure | null>(null);
  const [downloading, setDownloading] = useState(false);
  const [downloadError, setDownloadError] = useState<MediaFailure | null>(null);

  // Keyed by the sources: the view object is rebuilt on every timeline change.
  const sources = `${a.source.mxc} ${a.thumbnail?.mxc ?? ''}`;
  // biome-ignore lint/correctness/useExhaustiveDependencies: a changes only when its sources do
  useEffect(() => {
    if (!previewable) return;
    let url: string | null = null;
    let live = true;
    props.client.media.preview(a).then(
      (blob) => {
        if (!live || !blob) return;
        url = URL.createObjectURL(blob);
        setSrc(url);
      },
      (err) => {
        if (live) setPreviewError(reasonOf(err));
      },
    );
    return () => {
      live = false;
      if (url) URL.revokeObjectURL(url);
    };
  }, [props.client, sources, previewable]);

  const save = async () => {
    setDownloading(true);
    setDownloadError(null);
    try {
      const blob = await props.client.media.download(a);
      const url = URL.createObjectURL(blob);
      const link = document.createElement('a');
      link.href = url;
      link.download = a.name;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (err) {
      setDownloadError(reasonOf(err));
    } finally {
      setDownloading(false);
    }
  };

  const size = a.size !== null ? formatBytes(a.size, language) : null;
  // Reserve the image's box before it loads, so the timeline does not jump.
  const box =
    a.width && a.height
      ? { aspectRatio: `${a.width} / ${a.height}`, width: `min(100%, ${Math.min(a.width, 400)}px)` }
      : undefined;
  return (
    <div
      className={`attachment ${previewable ? 'image' : 'file'}`}
      data-encrypted={a.source.file ? 'true' : 'false'}
    >
      {previewable &&
        (previewError ? (
          <p className="attachment-error" role="status">
            {failureText(t, previewError)}
          </p>
        ) : src ? (
          <img className="preview" src={src} alt={a.name} style={box} />
        ) : (
          <div className="preview loading" style={box} role="status">
            {t('imageLoading')}
          </div>
        ))}
      <div className="file-row">
        <span className="file-name" title={a.name}>
          {a.name}
        </span>
        {size && <span className="file-size">{size}</span>}
        <button
          type="button"
          onClick={save}
          disabled={downloading}
          aria-label={t('downloadFile', { name: a.name })}
        >
          {downloading ? t('downloading') : t('download')}
        </button>
      </div>
      {downloadError && (
        <p className="attachment-error" role="alert">
          {failureText(t, downloadError)}
        </p>
      )}
      {a.caption && <p className="body caption">{a.caption}</p>}
    </div>
  );
}

function uploadErrorText(t: Translate, language: string, u: Upload, e: UploadError): string {
  switch (e.kind) {
    case 'too-large':
      return e.limit !== null
        ? t('uploadTooLarge', { name: u.name, limit: formatBytes(e.limit, language) })
        : t('uploadTooLargeNoLimit', { name: u.name });
    case 'quota':
      return t('uploadQuota', { name: u.name });
    case 'rate-limited':
      return t('uploadRateLimited', { name: u.name });
    case 'unavailable':
      return t('mediaUnavailable');
    case 'network':
      return t('uploadNetwork', { name: u.name });
    default:
      return t('uploadFailed', { name: u.name, message: e.message });
  }
}

/** The room's files on their way: progress while they go, the reason when they were refused. */
export function UploadList(props: { client: ConclaveClient; roomId: string }) {
  const { t, language } = useI18n();
  const uploads = props.client.media.uploadsOf(props.roomId);
  if (uploads.length === 0) return null;
  return (
    <ul className="uploads" aria-label={t('uploads')}>
      {uploads.map((u) => (
        <li key={u.id} className={`upload ${u.phase}`} data-testid="upload">
          {u.phase === 'failed' && u.error ? (
            <p role="alert" className="upload-error">
              {uploadErrorText(t, language, u, u.error)}
            </p>
          ) : (
            <>
              <span className="upload-status" role="status">
                {u.phase === 'sending'
                  ? t('uploadSending', { name: u.name })
                  : u.phase === 'preparing'
                    ? t('uploadPreparing', { name: u.name })
                    : t('uploadUploading', {
                        name: u.name,
                        percent: u.size > 0 ? Math.floor((100 * u.loaded) / u.size) : 100,
                      })}
              </span>
              <progress
                max={u.size || 1}
                value={u.phase === 'sending' ? u.size || 1 : u.loaded}
                aria-label={t('uploadProgress', { name: u.name })}
              />
            </>
          )}
          {props.client.media.canRetry(u) && (
            <button type="button" onClick={() => props.client.media.retry(u.id)}>
              {t('retry')}
            </button>
          )}
          {u.phase !== 'sending' && (
            <button type="button" onClick={() => props.client.media.cancel(u.id)}>
              {u.phase === 'failed' ? t('dismiss') : t('cancel')}
            </button>
          )}
        </li>
      ))}
    </ul>
  );
}
