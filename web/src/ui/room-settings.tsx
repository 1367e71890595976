import { type FormEvent, useEffect, useState } from 'react';
import { useI18n } from '../i18n/index.ts';
import type { ConclaveClient } from '../matrix/client.ts';
import { ROLE_LEVELS, roleOf } from '../matrix/view-models.ts';
import { Dialog, ErrorLine, errorText } from './dialog.tsx';
import { useClientVersion } from './use-client.ts';

export function RoomSettingsDialog(props: { client: ConclaveClient; roomId: string; onClose(): void }) {
  const { client, roomId } = props;
  const { t } = useI18n();
  useClientVersion(client);
  const room = client.room(roomId);
  const state = room?.currentState;
  const [name, setName] = useState(room?.name ?? '');
  const [topic, setTopic] = useState(
    (state?.getStateEvents('m.room.topic', '')?.getContent().topic as string | undefined) ?? '',
  );
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);
  if (!room || !state) return null;
  const me = client.userId;
  const may = (type: string) => state.maySendStateEvent(type, me);
  const myLevel = room.getMember(me)?.powerLevel ?? 0;
  const pl = state.getStateEvents('m.room.power_levels', '')?.getContent() ?? {};
  const kickLevel = typeof pl.kick === 'number' ? pl.kick : 50;
  const banLevel = typeof pl.ban === 'number' ? pl.ban : 50;
  const joinRule =
    (state.getStateEvents('m.room.join_rules', '')?.getContent().join_rule as string) ?? 'invite';
  const history =
    (state.getStateEvents('m.room.history_visibility', '')?.getContent().history_visibility as string) ??
    'shared';

  const act = async (fn: () => Promise<void>) => {
    setError(null);
    try {
      await fn();
    } catch (err) {
      setError(errorText(err));
    }
  };
  const save = async (e: FormEvent) => {
    e.preventDefault();
    await act(async () => {
      if (may('m.room.name') && name !== room.name)
        await client.setRoomState(roomId, 'm.room.name', { name });
      if (may('m.room.topic')) await client.setRoomState(roomId, 'm.room.topic', { topic });
      setSaved(true);
    });
  };
  const members = room.getMembers().filter((m) => m.membership === 'join' || m.membership === 'invite');
  const banned = room.getMembers().filter((m) => m.membership === 'ban');
  const knocking = room.getMembers().filter((m) => m.membership === 'knock');
  const inviteLevel = typeof pl.invite === 'number' ? pl.invite : 0;

  return (
    <Dialog title={t('settings')} onClose={props.onClose} wide>
      <form onSubmit={save}>
        <label>
          {t('roomName')}
          <input value={name} disabled={!may('m.room.name')} onChange={(e) => setName(e.target.value)} />
        </label>
        <label>
          {t('roomTopic')}
          <input value={topic} disabled={!may('m.room.topic')} onChange={(e) => setTopic(e.target.value)} />
        </label>
        <label>
          {t('joinRule')}
          <select
            value={joinRule}
            disabled={!may('m.room.join_rules')}
            onChange={(e) =>
              void act(() => client.setRoomState(roomId, 'm.room.join_rules', { join_rule: e.target.value }))
            }
          >
            <option value="invite">{t('joinRuleInvite')}</option>
            <option value="knock">{t('joinRuleKnock')}</option>
            <option value="public">{t('joinRulePublic')}</option>
          </select>
        </label>
        <label>
          {t('historyVisibility')}
          <select
            value={history}
            disabled={!may('m.room.history_visibility')}
            onChange={(e) =>
              void act(() =>
                client.setRoomState(roomId, 'm.room.history_visibility', {
                  history_visibility: e.target.value,
                }),
              )
            }
          >
            <option value="shared">{t('historyShared')}</option>
            <option value="invited">{t('historyInvited')}</option>
            <option value="joined">{t('historyJoined')}</option>
            <option value="world_readable">{t('historyWorld')}</option>
          </select>
        </label>
        <div className="actions">
          {saved && <span role="status">{t('saved')}</span>}
          <button type="submit" className="primary" disabled={!may('m.room.name') && !may('m.room.topic')}>
            {t('save')}
          </button>
        </div>
      </form>
      <ErrorLine error={error} />
      {knocking.length > 0 && (
        <>
          <h3>{t('askingToJoin')}</h3>
          <ul className="members">
            {knocking.map((m) => (
              <li key={m.userId} data-user-id={m.userId}>
                <span className="member-name">
                  {m.name} <small>{m.userId}</small>
                </span>
                {myLevel >= inviteLevel && (
                  <button
                    type="button"
                    className="primary"
                    onClick={() => void act(() => client.invite(roomId, m.userId))}
                  >
                    {t('letIn')}
                  </button>
                )}
                {myLevel >= kickLevel && (
                  <button type="button" onClick={() => void act(() => client.kick(roomId, m.userId))}>
                    {t('deny')}
                  </button>
                )}
              </li>
            ))}
          </ul>
        </>
      )}
      <h3>{t('members', { count: members.length })}</h3>
      <ul className="members">
        {members.map((m) => (
          <MemberRow
            key={m.userId}
            client={client}
            roomId={roomId}
            userId={m.userId}
            name={m.name}
            level={m.powerLevel}
            canChangeRole={may('m.room.power_levels') && m.userId !== me && m.powerLevel < myLevel}
            canKick={m.userId !== me && myLevel >= kickLevel && m.powerLevel < myLevel}
            canBan={m.userId !== me && myLevel >= banLevel && m.powerLevel < myLevel}
            act={act}
          />
        ))}
      </ul>
      {banned.length > 0 && (
        <>
          <h3>{t('bannedUsers')}</h3>
          <ul className="members">
            {banned.map((m) => (
              <li key={m.userId}>
                <span>{m.name}</span>
                {myLevel >= banLevel && (
                  <button type="button" onClick={() => void act(() => client.unban(roomId, m.userId))}>
                    {t('unban')}
                  </button>
                )}
              </li>
            ))}
          </ul>
        </>
      )}
    </Dialog>
  );
}

function MemberRow(props: {
  client: ConclaveClient;
  roomId: string;
  userId: string;
  name: string;
  level: number;
  canChangeRole: boolean;
  canKick: boolean;
  canBan: boolean;
  act(fn: () => Promise<void>): Promise<void>;
}) {
  const { t } = useI18n();
  const { client, roomId, userId } = props;
  const [verified, setVerified] = useState<boolean | null>(null);
  const version = useClientVersion(client);
  // biome-ignore lint/correctness/useExhaustiveDependencies: re-checked when trust changes
  useEffect(() => {
    let live = true;
    void client.isUserVerified(userId).then((v) => live && setVerified(v));
    return () => {
      live = false;
    };
  }, [client, userId, version]);
  const role = roleOf(props.level);
  return (
    <li data-user-id={userId}>
      <span className="member-name">
        {props.name} <small>{userId}</small>
      </span>
      {userId !== client.userId && (
        <span className={`trust ${verified ? 'verified' : ''}`}>
          {verified ? t('verified') : t('notVerified')}
        </span>
      )}
      <label>
        <span className="visually-hidden">{t('role')}</span>
        <select
          aria-label={`${t('role')}: ${props.name}`}
          value={role === 'custom' ? 'custom' : String(props.level)}
          disabled={!props.canChangeRole}
          onChange={(e) => void props.act(() => client.setPowerLevel(roomId, userId, Number(e.target.value)))}
        >
          <option value={ROLE_LEVELS.admin}>{t('roleAdmin')}</option>
          <option value={ROLE_LEVELS.moderator}>{t('roleModerator')}</option>
          <option value={ROLE_LEVELS.member}>{t('roleMember')}</option>
          {role === 'custom' && <option value="custom">{t('roleCustom', { level: props.level })}</option>}
        </select>
      </label>
      {userId !== client.userId && verified === false && (
        <button
          type="button"
          onClick={() => void props.act(() => client.verifications.verifyUser(userId, roomId))}
        >
          {t('verify')}
        </button>
      )}
      {props.canKick && (
        <button type="button" onClick={() => void props.act(() => client.kick(roomId, userId))}>
          {t('kick')}
        </button>
      )}
      {props.canBan && (
        <button type="button" onClick={() => void props.act(() => client.ban(roomId, userId))}>
          {t('ban')}
        </button>
      )}
    </li>
  );
}
