import { useCallback, useEffect, useState } from 'react';
import { useI18n } from '../i18n/index.ts';
import type { ConclaveClient } from '../matrix/client.ts';
import { Dialog, ErrorLine, errorText } from './dialog.tsx';

interface Device {
  device_id: string;
  display_name?: string;
  last_seen_ts?: number;
}

export function DevicesDialog(props: { client: ConclaveClient; onClose(): void }) {
  const { t, language } = useI18n();
  const [devices, setDevices] = useState<Device[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [password, setPassword] = useState('');
  const reload = useCallback(() => {
    props.client
      .devices()
      .then((d) => setDevices(d as Device[]))
      .catch((err) => setError(errorText(err)));
  }, [props.client]);
  useEffect(reload, [reload]);
  const mine = props.client.session.deviceId;
  return (
    <Dialog title={t('devices')} onClose={props.onClose} wide>
      <ErrorLine error={error} />
      {devices === null ? (
        <p>{t('loading')}</p>
      ) : (
        <ul className="devices">
          {devices.map((d) => (
            <DeviceRow
              key={d.device_id}
              device={d}
              current={d.device_id === mine}
              language={language}
              onRename={async (name) => {
                await props.client.renameDevice(d.device_id, name).catch((err) => setError(errorText(err)));
                reload();
              }}
              onSignOut={async () => {
                await props.client
                  .deleteDevice(d.device_id, password)
                  .catch((err) => setError(errorText(err)));
                reload();
              }}
            />
          ))}
        </ul>
      )}
      {devices && devices.length > 1 && (
        <label>
          {t('password')}
          <input
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </label>
      )}
    </Dialog>
  );
}

function DeviceRow(props: {
  device: Device;
  current: boolean;
  language: string;
  onRename(name: string): Promise<void>;
  onSignOut(): Promise<void>;
}) {
  const { t } = useI18n();
  const [name, setName] = useState(props.device.display_name ?? '');
  const d = props.device;
  return (
    <li>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void props.onRename(name);
        }}
      >
        <label>
          {d.device_id} {props.current && `(${t('thisDevice')})`}
          <input value={name} onChange={(e) => setName(e.target.value)} />
        </label>
        {d.last_seen_ts && (
          <small>{t('lastSeen', { when: new Date(d.last_seen_ts).toLocaleString(props.language) })}</small>
        )}
        <div className="actions">
          <button type="submit">{t('rename')}</button>
          {!props.current && (
            <button type="button" onClick={() => void props.onSignOut()}>
              {t('signOutDevice')}
            </button>
          )}
        </div>
      </form>
    </li>
  );
}
