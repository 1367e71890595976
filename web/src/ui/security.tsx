import { useState } from 'react';
import { useI18n } from '../i18n/index.ts';
import type { ConclaveClient } from '../matrix/client.ts';
import { Dialog, ErrorLine, FormActions } from './dialog.tsx';
import { useClientVersion } from './use-client.ts';

/** Shows the new recovery key once, or asks for it on a new device. */
export function SecurityPrompt(props: { client: ConclaveClient }) {
  const { client } = props;
  const { t } = useI18n();
  useClientVersion(client);
  const [dismissed, setDismissed] = useState(false);
  const [key, setKey] = useState('');
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const state = client.security;

  if (state.kind === 'created') {
    return (
      <Dialog title={t('recoveryKeyTitle')} onClose={() => client.acknowledgeRecoveryKey()}>
        <p>{t('recoveryKeyExplain')}</p>
        <p>
          <code className="recovery-key" data-testid="recovery-key">
            {state.recoveryKey}
          </code>
        </p>
        <div className="actions">
          <button type="button" onClick={() => void navigator.clipboard?.writeText(state.recoveryKey)}>
            {t('copy')}
          </button>
          <button type="button" className="primary" onClick={() => client.acknowledgeRecoveryKey()}>
            {t('recoveryKeySaved')}
          </button>
        </div>
      </Dialog>
    );
  }
  if (message) {
    return (
      <Dialog title={t('restoreTitle')} onClose={() => setMessage(null)}>
        <p role="status">{message}</p>
        <div className="actions">
          <button type="button" className="primary" onClick={() => setMessage(null)}>
            {t('close')}
          </button>
        </div>
      </Dialog>
    );
  }
  // While an emoji verification of this device runs, its own dialog is shown instead.
  if (state.kind !== 'needs-recovery' || dismissed || client.verifications.view) return null;
  return (
    <Dialog title={t('restoreTitle')} onClose={() => setDismissed(true)}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            const count = await client.restoreWithRecoveryKey(key);
            setMessage(t('restored', { count }));
          } catch (err) {
            setError((err as Error).message === 'bad-key' ? t('badRecoveryKey') : (err as Error).message);
          } finally {
            setBusy(false);
          }
        }}
      >
        <p>{t('restoreExplain')}</p>
        <label>
          {t('recoveryKey')}
          <input
            name="recoveryKey"
            autoComplete="off"
            required
            value={key}
            onChange={(e) => setKey(e.target.value)}
          />
        </label>
        <ErrorLine error={error} />
        <p>
          <button type="button" className="link" onClick={() => void client.verifications.verifyOwnDevice()}>
            {t('verifyWithOtherDevice')}
          </button>
        </p>
        <FormActions
          onCancel={() => setDismissed(true)}
          cancel={t('skip')}
          submit={busy ? t('restoring') : t('restore')}
          busy={busy}
        />
      </form>
    </Dialog>
  );
}
