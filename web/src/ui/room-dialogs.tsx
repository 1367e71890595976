import { type FormEvent, useEffect, useState } from 'react';
import { useI18n } from '../i18n/index.ts';
import type { ConclaveClient } from '../matrix/client.ts';
import { Dialog, ErrorLine, errorText, FormActions } from './dialog.tsx';
import { openRoom } from './use-client.ts';

export function CreateRoomDialog(props: { client: ConclaveClient; onClose(): void }) {
  const { t } = useI18n();
  const [name, setName] = useState('');
  const [topic, setTopic] = useState('');
  const [alias, setAlias] = useState('');
  const [visibility, setVisibility] = useState<'private' | 'public'>('private');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    try {
      const roomId = await props.client.createRoom({
        name: name.trim(),
        topic: topic.trim(),
        alias: alias.trim(),
        visibility,
      });
      props.onClose();
      openRoom(roomId);
    } catch (err) {
      setError(errorText(err));
      setBusy(false);
    }
  };
  return (
    <Dialog title={t('createRoom')} onClose={props.onClose}>
      <form onSubmit={submit}>
        <label>
          {t('roomName')}
          <input name="name" required value={name} onChange={(e) => setName(e.target.value)} />
        </label>
        <label>
          {t('roomTopic')}
          <input name="topic" value={topic} onChange={(e) => setTopic(e.target.value)} />
        </label>
        <label>
          {t('roomAlias')}
          <input
            name="alias"
            pattern="[a-z0-9._=\-/]*"
            value={alias}
            onChange={(e) => setAlias(e.target.value)}
          />
        </label>
        <fieldset>
          <legend>{t('roomVisibility')}</legend>
          {(['private', 'public'] as const).map((v) => (
            <label className="inline" key={v}>
              <input
                type="radio"
                name="visibility"
                value={v}
                checked={visibility === v}
                onChange={() => setVisibility(v)}
              />
              {v === 'private' ? t('roomPrivate') : t('roomPublic')}
            </label>
          ))}
        </fieldset>
        <ErrorLine error={error} />
        <FormActions onCancel={props.onClose} cancel={t('cancel')} submit={t('create')} busy={busy} />
      </form>
    </Dialog>
  );
}

interface PublicRoom {
  room_id: string;
  name?: string;
  topic?: string;
  num_joined_members: number;
  canonical_alias?: string;
}

export function JoinRoomDialog(props: { client: ConclaveClient; onClose(): void }) {
  const { t } = useI18n();
  const [target, setTarget] = useState('');
  const [rooms, setRooms] = useState<PublicRoom[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [knocked, setKnocked] = useState(false);
  useEffect(() => {
    props.client
      .publicRooms()
      .then((r) => setRooms(r as PublicRoom[]))
      .catch(() => setRooms([]));
  }, [props.client]);
  const join = async (idOrAlias: string) => {
    try {
      const roomId = await props.client.join(idOrAlias);
      props.onClose();
      openRoom(roomId);
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <Dialog title={t('joinRoom')} onClose={props.onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void join(target);
        }}
      >
        <label>
          {t('joinByAlias')}
          <input name="room" required value={target} onChange={(e) => setTarget(e.target.value)} />
        </label>
        <ErrorLine error={error} />
        {knocked && <p role="status">{t('knockSent')}</p>}
        <div className="actions">
          <button
            type="button"
            disabled={target.trim() === ''}
            onClick={async () => {
              setError(null);
              try {
                await props.client.knock(target);
                setKnocked(true);
              } catch (err) {
                setError(errorText(err));
              }
            }}
          >
            {t('knock')}
          </button>
          <button type="submit" className="primary">
            {t('join')}
          </button>
        </div>
      </form>
      <h3>{t('publicRooms')}</h3>
      {rooms === null ? (
        <p>{t('loading')}</p>
      ) : rooms.length === 0 ? (
        <p>{t('noPublicRooms')}</p>
      ) : (
        <ul className="directory">
          {rooms.map((r) => (
            <li key={r.room_id}>
              <div>
                <strong>{r.name ?? r.canonical_alias ?? r.room_id}</strong>
                {r.topic && <p>{r.topic}</p>}
                <small>{t('members', { count: r.num_joined_members })}</small>
              </div>
              <button type="button" onClick={() => void join(r.room_id)}>
                {t('join')}
              </button>
            </li>
          ))}
        </ul>
      )}
    </Dialog>
  );
}

export function InviteDialog(props: { client: ConclaveClient; roomId: string; onClose(): void }) {
  const { t } = useI18n();
  const [userId, setUserId] = useState('');
  const [error, setError] = useState<string | null>(null);
  return (
    <Dialog title={t('inviteUser')} onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          try {
            await props.client.invite(props.roomId, userId);
            props.onClose();
          } catch (err) {
            setError(errorText(err));
          }
        }}
      >
        <label>
          {t('userId')}
          <input
            name="userId"
            required
            pattern="@[^:]+:.+"
            value={userId}
            onChange={(e) => setUserId(e.target.value)}
          />
        </label>
        <ErrorLine error={error} />
        <FormActions onCancel={props.onClose} cancel={t('cancel')} submit={t('invite')} />
      </form>
    </Dialog>
  );
}
