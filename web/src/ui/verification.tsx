import { useI18n } from '../i18n/index.ts';
import type { ConclaveClient } from '../matrix/client.ts';
import { Dialog } from './dialog.tsx';
import { useClientVersion } from './use-client.ts';

export function VerificationPrompt(props: { client: ConclaveClient }) {
  const { t } = useI18n();
  useClientVersion(props.client);
  const v = props.client.verifications;
  const view = v.view;
  if (!view) return null;
  const name = props.client.matrix.getUser(view.otherUserId)?.displayName ?? view.otherUserId;
  return (
    <Dialog
      title={t('verifyUser', { name })}
      onClose={() => (view.phase === 'done' ? v.dismiss() : v.cancel())}
    >
      {view.phase === 'incoming' && (
        <>
          <p>{t('verificationRequest', { name })}</p>
          <div className="actions">
            <button type="button" onClick={() => v.cancel()}>
              {t('decline')}
            </button>
            <button type="button" className="primary" onClick={() => void v.accept()}>
              {t('accept')}
            </button>
          </div>
        </>
      )}
      {view.phase === 'waiting' && <p role="status">{t('waitingForOther')}</p>}
      {view.phase === 'emoji' && (
        <>
          <p>{t('verificationCompare')}</p>
          <ol className="sas-emoji" data-testid="sas-emoji">
            {view.emoji.map(([emoji, label]) => (
              <li key={label}>
                <span aria-hidden="true">{emoji}</span>
                <small>{label}</small>
              </li>
            ))}
          </ol>
          <div className="actions">
            <button type="button" onClick={() => v.mismatch()}>
              {t('theyDontMatch')}
            </button>
            <button type="button" className="primary" onClick={() => void v.confirm()}>
              {t('theyMatch')}
            </button>
          </div>
        </>
      )}
      {view.phase === 'done' && (
        <>
          <p role="status">{t('verificationDone')}</p>
          <div className="actions">
            <button type="button" className="primary" onClick={() => v.dismiss()}>
              {t('close')}
            </button>
          </div>
        </>
      )}
      {view.phase === 'cancelled' && (
        <>
          <p role="status">{t('verificationCancelled')}</p>
          <div className="actions">
            <button type="button" onClick={() => v.dismiss()}>
              {t('close')}
            </button>
          </div>
        </>
      )}
    </Dialog>
  );
}
