import {
  type DragEvent,
  type KeyboardEvent,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
} from 'react';
import { useI18n } from '../i18n/index.ts';
import type { ConclaveClient } from '../matrix/client.ts';
import { readersOf, type TimelineItem, timelineItems, typingNames } from '../matrix/view-models.ts';
import { Attachment, UploadList } from './attachment.tsx';
import { InviteDialog } from './room-dialogs.tsx';
import { RoomSettingsDialog } from './room-settings.tsx';
import { openRoom, useClientVersion } from './use-client.ts';

function formatDay(ts: number, t: ReturnType<typeof useI18n>['t'], language: string): string {
  const d = new Date(ts);
  const today = new Date();
  const yesterday = new Date(Date.now() - 86_400_000);
  if (d.toDateString() === today.toDateString()) return t('today');
  if (d.toDateString() === yesterday.toDateString()) return t('yesterday');
  return d.toLocaleDateString(language, { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
}

export function RoomView(props: { client: ConclaveClient; roomId: string }) {
  const { client, roomId } = props;
  const { t, language } = useI18n();
  const version = useClientVersion(client);
  const room = client.room(roomId);
  const [dialog, setDialog] = useState<'invite' | 'settings' | null>(null);
  const [readUpTo] = useState(() => room?.getEventReadUpTo(client.userId) ?? null);
  const [atStart, setAtStart] = useState(false);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [dragging, setDragging] = useState(false);
  const dragDepth = useRef(0);
  const scroller = useRef<HTMLDivElement>(null);
  const stickToBottom = useRef(true);
  const heightBeforeLoad = useRef<number | null>(null);

  // biome-ignore lint/correctness/useExhaustiveDependencies: version is the change signal
  const events = useMemo(() => [...(room?.getLiveTimeline().getEvents() ?? [])], [room, version]);
  const items = useMemo(() => timelineItems(room, events, { readUpTo }), [room, events, readUpTo]);
  const membership = room?.getMyMembership() ?? 'leave';
  const myMember = room?.getMember(client.userId);

  const loadOlder = async () => {
    if (loadingOlder || atStart || !scroller.current) return;
    setLoadingOlder(true);
    heightBeforeLoad.current = scroller.current.scrollHeight - scroller.current.scrollTop;
    try {
      const more = await client.loadOlder(roomId);
      if (!more) setAtStart(true);
    } finally {
      setLoadingOlder(false);
    }
  };

  // Keep the view where it was when older events are added above, or at the bottom for new ones.
  // biome-ignore lint/correctness/useExhaustiveDependencies: runs after each new list of items
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (heightBeforeLoad.current !== null) {
      el.scrollTop = el.scrollHeight - heightBeforeLoad.current;
      heightBeforeLoad.current = null;
    } else if (stickToBottom.current) {
      el.scrollTop = el.scrollHeight;
    }
  }, [items]);

  // An image that loads grows its row: stay at the bottom if the view was there. (load does not
  // bubble, but it can be caught on the way down.)
  // biome-ignore lint/correctness/useExhaustiveDependencies: the scroller exists once the room does
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const onLoad = (e: Event) => {
      if (e.target instanceof HTMLImageElement && stickToBottom.current) el.scrollTop = el.scrollHeight;
    };
    el.addEventListener('load', onLoad, true);
    return () => el.removeEventListener('load', onLoad, true);
  }, [room]);

  // Fill the screen: load older events until it scrolls or the start is reached.
  // biome-ignore lint/correctness/useExhaustiveDependencies: re-checked after each load
  useEffect(() => {
    const el = scroller.current;
    if (el && !atStart && !loadingOlder && el.scrollHeight <= el.clientHeight + 40 && membership === 'join') {
      void loadOlder();
    }
  }, [items, atStart, loadingOlder]);

  // Read receipts: the newest event is read while the room is open, at the bottom, and visible.
  // biome-ignore lint/correctness/useExhaustiveDependencies: version is the change signal
  useEffect(() => {
    if (membership === 'join' && stickToBottom.current && document.visibilityState === 'visible') {
      client.markRead(roomId);
    }
  }, [client, roomId, version, membership]);

  if (!room) {
    return (
      <div className="centered">
        <p>{t('loading')}</p>
      </div>
    );
  }

  const lastMine = [...events]
    .reverse()
    .find((e) => e.getSender() === client.userId && e.getId()?.startsWith('$'));
  const seenBy = lastMine ? readersOf(room, lastMine, client.userId) : [];
  const typing = typingNames(room, client.userId);
  const topic = room.currentState.getStateEvents('m.room.topic', '')?.getContent().topic as
    | string
    | undefined;
  const removedBy = myMember?.events.member?.getSender();
  const removedReason = myMember?.events.member?.getContent().reason as string | undefined;

  // Files dropped anywhere on the room (timeline or composer) are sent to it.
  const hasFiles = (e: DragEvent) => e.dataTransfer?.types.includes('Files') ?? false;
  const dropHandlers =
    membership === 'join'
      ? {
          onDragEnter: (e: DragEvent) => {
            if (!hasFiles(e)) return;
            e.preventDefault();
            dragDepth.current++;
            setDragging(true);
          },
          onDragOver: (e: DragEvent) => {
            if (hasFiles(e)) e.preventDefault();
          },
          onDragLeave: () => {
            dragDepth.current = Math.max(0, dragDepth.current - 1);
            if (dragDepth.current === 0) setDragging(false);
          },
          onDrop: (e: DragEvent) => {
            dragDepth.current = 0;
            setDragging(false);
            const files = e.dataTransfer?.files;
            if (!files || files.length === 0) return;
            e.preventDefault();
            sendFiles(client, roomId, files);
          },
        }
      : {};

  return (
    <section className={`room ${dragging ? 'dragging' : ''}`} aria-labelledby="room-title" {...dropHandlers}>
      {dragging && (
        <div className="drop-overlay" aria-hidden="true">
          {t('dropFiles', { room: room.name })}
        </div>
      )}
      <header className="room-header">
        <button type="button" className="back" onClick={() => openRoom(null)} aria-label={t('back')}>
          ←
        </button>
        <div className="room-title">
          <h2 id="room-title">{room.name || room.roomId}</h2>
          {topic && <p className="topic">{topic}</p>}
        </div>
        <span className={`e2e ${room.hasEncryptionStateEvent() ? 'on' : 'off'}`}>
          {room.hasEncryptionStateEvent() ? `🔒 ${t('encrypted')}` : t('notEncrypted')}
        </span>
        {membership === 'join' && (
          <div className="room-actions">
            <button type="button" onClick={() => setDialog('invite')}>
              {t('invite')}
            </button>
            <button type="button" onClick={() => setDialog('settings')}>
              {t('settings')}
            </button>
            <button
              type="button"
              onClick={async () => {
                await client.leave(roomId);
                openRoom(null);
              }}
            >
              {t('leave')}
            </button>
          </div>
        )}
      </header>
      <div
        ref={scroller}
        className="timeline"
        role="log"
        aria-label={t('timelineLabel')}
        aria-live="polite"
        // biome-ignore lint/a11y/noNoninteractiveTabindex: the message log scrolls by keyboard
        tabIndex={0}
        onScroll={(e) => {
          const el = e.currentTarget;
          stickToBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
          if (el.scrollTop < 200) void loadOlder();
          if (stickToBottom.current) client.markRead(roomId);
        }}
      >
        {atStart ? (
          <p className="timeline-start">{t('startOfRoom')}</p>
        ) : loadingOlder ? (
          <p className="timeline-start">{t('loadingHistory')}</p>
        ) : null}
        <ol className="events">
          {items.map((item) => (
            <TimelineRow
              key={item.key}
              item={item}
              client={client}
              roomId={roomId}
              formatDay={(ts) => formatDay(ts, t, language)}
            />
          ))}
        </ol>
        {seenBy.length > 0 && (
          <p className="seen-by" data-testid="seen-by">
            {t('seenBy', { names: seenBy.join(', ') })}
          </p>
        )}
      </div>
      <p className="typing" aria-live="polite" data-testid="typing">
        {typing.length === 1
          ? t('typingOne', { name: typing[0]! })
          : typing.length > 1
            ? t('typingMany', { names: typing.join(', ') })
            : ''}
      </p>
      {membership === 'join' && <UploadList client={client} roomId={roomId} />}
      {membership === 'join' ? (
        <Composer client={client} roomId={roomId} roomName={room.name} />
      ) : (
        <p className="removed" role="status">
          {membership === 'ban'
            ? t('youWereBanned', { name: removedBy ?? '' })
            : removedBy && removedBy !== client.userId
              ? t('youWereRemoved', { name: room.getMember(removedBy)?.name ?? removedBy })
              : t('youLeft')}
          {removedReason ? ` ${t('reason', { reason: removedReason })}` : ''}
        </p>
      )}
      {dialog === 'invite' && (
        <InviteDialog client={client} roomId={roomId} onClose={() => setDialog(null)} />
      )}
      {dialog === 'settings' && (
        <RoomSettingsDialog client={client} roomId={roomId} onClose={() => setDialog(null)} />
      )}
    </section>
  );
}

function TimelineRow(props: {
  item: TimelineItem;
  client: ConclaveClient;
  roomId: string;
  formatDay(ts: number): string;
}) {
  const { item } = props;
  const { t, language } = useI18n();
  switch (item.kind) {
    case 'day':
      return (
        <li className="day">
          <span>{props.formatDay(item.ts)}</span>
        </li>
      );
    case 'unread-marker':
      return (
        <li className="unread-marker">
          <span>{t('newMessages')}</span>
        </li>
      );
    case 'notice':
      return <li className="notice">{t(item.message, item.params)}</li>;
    case 'message': {
      const time = new Date(item.ts).toLocaleTimeString(language, { hour: '2-digit', minute: '2-digit' });
      return (
        <li
          className={`message ${item.continuation ? 'continuation' : ''} ${item.pending ? 'pending' : ''}`}
          data-event-id={item.eventId}
        >
          {!item.continuation && (
            <div className="message-meta">
              <span className="avatar" aria-hidden="true" style={{ background: colourFor(item.sender) }}>
                {(item.senderName.replace(/^@/, '')[0] ?? '?').toUpperCase()}
              </span>
              <span className="sender" title={item.sender}>
                {item.senderName}
              </span>
              <time dateTime={new Date(item.ts).toISOString()}>{time}</time>
            </div>
          )}
          {item.undecryptable !== null ? (
            <p className="body undecryptable">{t('undecryptable', { reason: item.undecryptable })}</p>
          ) : item.attachment !== null ? (
            <Attachment client={props.client} attachment={item.attachment} />
          ) : item.html !== null ? (
            // The HTML went through sanitizeHtml (DOMPurify with an allow-list) in timelineItems.
            // biome-ignore lint/security/noDangerouslySetInnerHtml: sanitised above
            <div className="body" dangerouslySetInnerHTML={{ __html: item.html }} />
          ) : (
            <p className="body">{item.body}</p>
          )}
          {item.encrypted && item.undecryptable === null && (
            <SenderShield client={props.client} roomId={props.roomId} eventId={item.eventId} />
          )}
        </li>
      );
    }
  }
}

/** Marks a message whose sending device is not verified. */
function SenderShield(props: { client: ConclaveClient; roomId: string; eventId: string }) {
  const { t } = useI18n();
  const [warning, setWarning] = useState(false);
  const version = useClientVersion(props.client);
  // biome-ignore lint/correctness/useExhaustiveDependencies: re-checked when trust changes
  useEffect(() => {
    let live = true;
    void props.client.senderWarning(props.roomId, props.eventId).then((w) => {
      if (live) setWarning(w);
    });
    return () => {
      live = false;
    };
  }, [props.client, props.eventId, version]);
  if (!warning) return null;
  return (
    <span className="shield" role="img" aria-label={t('unverifiedSender')} title={t('unverifiedSender')}>
      ⚠
    </span>
  );
}

function colourFor(userId: string): string {
  let h = 0;
  for (const c of userId) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 45% 35%)`;
}

/** Sends files one after the other, in the order given. */
function sendFiles(client: ConclaveClient, roomId: string, files: FileList): void {
  const list = [...files];
  void (async () => {
    for (const f of list) await client.media.send(roomId, f);
  })();
}

function Composer(props: { client: ConclaveClient; roomId: string; roomName: string }) {
  const { t } = useI18n();
  const [text, setText] = useState('');
  const fileInput = useRef<HTMLInputElement>(null);
  const typingSince = useRef(0);
  const stopTyping = () => {
    if (typingSince.current !== 0) {
      typingSince.current = 0;
      props.client.setTyping(props.roomId, false);
    }
  };
  // biome-ignore lint/correctness/useExhaustiveDependencies: only on unmount
  useEffect(() => stopTyping, []);
  const send = async () => {
    const body = text.trim();
    if (!body) return;
    setText('');
    stopTyping();
    await props.client.sendMessage(props.roomId, body);
  };
  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      void send();
    }
  };
  return (
    <form
      className="composer"
      onSubmit={(e) => {
        e.preventDefault();
        void send();
      }}
    >
      <button
        type="button"
        className="attach"
        aria-label={t('attach')}
        title={t('attach')}
        onClick={() => fileInput.current?.click()}
      >
        <svg
          aria-hidden="true"
          width="20"
          height="20"
          viewBox="0 0 24 24"
          fill="none"
          stroke="currentColor"
          strokeWidth="2"
          strokeLinecap="round"
        >
          <path d="M16.5 6.5 8.6 14.4a2 2 0 0 0 2.8 2.8l7.9-7.9a4 4 0 0 0-5.6-5.6L5.8 11.6a6 6 0 0 0 8.5 8.5l6.2-6.2" />
        </svg>
      </button>
      <input
        ref={fileInput}
        type="file"
        multiple
        hidden
        data-testid="file-input"
        onChange={(e) => {
          if (e.target.files) sendFiles(props.client, props.roomId, e.target.files);
          e.target.value = '';
        }}
      />
      <label className="visually-hidden" htmlFor="composer-input">
        {t('messagePlaceholder', { room: props.roomName })}
      </label>
      <textarea
        id="composer-input"
        rows={1}
        value={text}
        placeholder={t('messagePlaceholder', { room: props.roomName })}
        onKeyDown={onKeyDown}
        onPaste={(e) => {
          const files = e.clipboardData?.files;
          if (files && files.length > 0) {
            e.preventDefault();
            sendFiles(props.client, props.roomId, files);
          }
        }}
        onBlur={stopTyping}
        onChange={(e) => {
          setText(e.target.value);
          const now = Date.now();
          if (e.target.value === '') stopTyping();
          else if (now - typingSince.current > 10_000) {
            typingSince.current = now;
            props.client.setTyping(props.roomId, true);
          }
        }}
      />
      <button type="submit" className="primary">
        {t('send')}
      </button>
    </form>
  );
}
