import { useMemo, useState } from 'react';
import { useI18n } from '../i18n/index.ts';
import type { ConclaveClient } from '../matrix/client.ts';
import { type RoomSummary, roomList } from '../matrix/view-models.ts';
import { DevicesDialog } from './devices.tsx';
import { LanguagePicker } from './language-picker.tsx';
import { CreateRoomDialog, JoinRoomDialog } from './room-dialogs.tsx';
import { RoomView } from './room-view.tsx';
import { SecurityPrompt } from './security.tsx';
import { openRoom, roomIdFromHash, useClientVersion, useHashRoute } from './use-client.ts';
import { VerificationPrompt } from './verification.tsx';

export function Chat(props: { client: ConclaveClient; onSignOut(): void }) {
  const { client } = props;
  const { t } = useI18n();
  const version = useClientVersion(client);
  const roomId = roomIdFromHash(useHashRoute());
  const [dialog, setDialog] = useState<'create' | 'join' | 'devices' | null>(null);
  // biome-ignore lint/correctness/useExhaustiveDependencies: version is the change signal
  const rooms = useMemo(() => roomList(client.rooms(), client.userId), [client, version]);
  const invites = rooms.filter((r) => r.membership === 'invite' || r.membership === 'knock');
  const joined = rooms.filter((r) => r.membership === 'join');

  return (
    <div className={`chat ${roomId ? 'has-room' : ''}`}>
      <nav className="sidebar" aria-label={t('roomListLabel')}>
        <header>
          <h1>{t('appName')}</h1>
          <p className="me" title={client.userId}>
            {client.userId}
          </p>
          <p className="transport" aria-live="polite">
            {client.transport === 'websocket'
              ? t('transportWebSocket')
              : client.transport === 'long-poll'
                ? t('transportPoll')
                : ''}
          </p>
        </header>
        <div className="sidebar-actions">
          <button type="button" className="primary" onClick={() => setDialog('create')}>
            {t('createRoom')}
          </button>
          <button type="button" onClick={() => setDialog('join')}>
            {t('joinRoom')}
          </button>
        </div>
        {invites.length > 0 && (
          <section aria-labelledby="invites-heading">
            <h2 id="invites-heading">{t('invites')}</h2>
            <ul className="room-list">
              {invites.map((r) => (
                <InviteItem key={r.roomId} client={client} room={r} />
              ))}
            </ul>
          </section>
        )}
        <section aria-labelledby="rooms-heading">
          <h2 id="rooms-heading">{t('rooms')}</h2>
          {joined.length === 0 ? (
            <p className="empty">{t('noRooms')}</p>
          ) : (
            <ul className="room-list">
              {joined.map((r) => (
                <li key={r.roomId}>
                  <a
                    href={`#/room/${encodeURIComponent(r.roomId)}`}
                    className="room-item"
                    aria-current={r.roomId === roomId ? 'page' : undefined}
                  >
                    <span className="room-name">
                      {r.encrypted && (
                        <span className="lock" role="img" aria-label={t('encrypted')}>
                          🔒
                        </span>
                      )}
                      {r.name}
                    </span>
                    {r.lastMessage && <span className="last">{r.lastMessage}</span>}
                    {r.mentions > 0 ? (
                      <span className="badge mention">
                        <span aria-hidden="true">{r.mentions}</span>
                        <span className="visually-hidden">{t('mentions', { count: r.mentions })}</span>
                      </span>
                    ) : r.unread > 0 && r.roomId !== roomId ? (
                      <span className="badge">
                        <span aria-hidden="true">{r.unread}</span>
                        <span className="visually-hidden">{t('unread', { count: r.unread })}</span>
                      </span>
                    ) : null}
                  </a>
                </li>
              ))}
            </ul>
          )}
        </section>
        <footer>
          <LanguagePicker />
          <button type="button" onClick={() => setDialog('devices')}>
            {t('devices')}
          </button>
          <button type="button" onClick={props.onSignOut}>
            {t('signOut')}
          </button>
        </footer>
      </nav>
      <main className="room-pane">
        {roomId ? (
          <RoomView key={roomId} client={client} roomId={roomId} />
        ) : (
          <div className="centered empty-room">
            <p>{t('appName')}</p>
          </div>
        )}
      </main>
      {dialog === 'create' && <CreateRoomDialog client={client} onClose={() => setDialog(null)} />}
      {dialog === 'join' && <JoinRoomDialog client={client} onClose={() => setDialog(null)} />}
      {dialog === 'devices' && <DevicesDialog client={client} onClose={() => setDialog(null)} />}
      <SecurityPrompt client={client} />
      <VerificationPrompt client={client} />
    </div>
  );
}

function InviteItem(props: { client: ConclaveClient; room: RoomSummary }) {
  const { t } = useI18n();
  const [busy, setBusy] = useState(false);
  const { room } = props;
  return (
    <li className="invite-item">
      <span className="room-name">{room.name}</span>
      {room.membership === 'knock' ? (
        <span className="last">{t('knockSent')}</span>
      ) : (
        room.inviter && <span className="last">{t('invitedBy', { name: room.inviter })}</span>
      )}
      <span className="invite-actions">
        {room.membership === 'invite' && (
          <button
            type="button"
            className="primary"
            disabled={busy}
            onClick={async () => {
              setBusy(true);
              try {
                await props.client.join(room.roomId);
                openRoom(room.roomId);
              } finally {
                setBusy(false);
              }
            }}
          >
            {t('accept')}
          </button>
        )}
        <button
          type="button"
          disabled={busy}
          onClick={async () => {
            setBusy(true);
            await props.client.leave(room.roomId).finally(() => setBusy(false));
          }}
        >
          {room.membership === 'knock' ? t('cancel') : t('decline')}
        </button>
      </span>
    </li>
  );
}
