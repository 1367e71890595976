// @vitest-environment jsdom
import { MatrixEvent } from 'matrix-js-sdk';
import { describe, expect, it } from 'vitest';
import { roleOf, timelineItems } from '../src/matrix/view-models.ts';

const day1 = Date.UTC(2026, 0, 5, 10, 0);
const day2 = Date.UTC(2026, 0, 6, 10, 0);
let n = 0;
function message(sender: string, ts: number, content: Record<string, unknown>) {
  n++;
  return new MatrixEvent({
    event_id: `$e${n}`,
    type: 'm.room.message',
    sender,
    origin_server_ts: ts,
    content,
    room_id: '!r',
  });
}

describe('timelineItems', () => {
  it('day separators, grouping by sender, and the new-messages marker after the last read event', () => {
    const a1 = message('@alice:x', day1, { msgtype: 'm.text', body: 'one' });
    const a2 = message('@alice:x', day1 + 60_000, { msgtype: 'm.text', body: 'two' });
    const b1 = message('@bob:x', day1 + 120_000, { msgtype: 'm.text', body: 'three' });
    const b2 = message('@bob:x', day2, { msgtype: 'm.text', body: 'four' });
    const items = timelineItems(null, [a1, a2, b1, b2], { readUpTo: a2.getId()! });
    expect(
      items.map((i) => (i.kind === 'message' ? `${i.body}${i.continuation ? '+' : ''}` : i.kind)),
    ).toEqual(['day', 'one', 'two+', 'unread-marker', 'three', 'day', 'four']);
  });

  it('formatted bodies are sanitised; verification requests and unknown events are not shown', () => {
    const html = message('@alice:x', day1, {
      msgtype: 'm.text',
      body: 'hi',
      format: 'org.matrix.custom.html',
      formatted_body: '<b onclick="x()">hi</b><script>alert(1)</script>',
    });
    const request = message('@alice:x', day1, { msgtype: 'm.key.verification.request', body: 'verify me' });
    const other = new MatrixEvent({
      event_id: '$o',
      type: 'org.example.thing',
      sender: '@a:x',
      origin_server_ts: day1,
      content: {},
    });
    const items = timelineItems(null, [html, request, other]);
    const messages = items.filter((i) => i.kind === 'message');
    expect(messages).toHaveLength(1);
    expect(messages[0]!.kind === 'message' && messages[0]!.html).toBe('<b>hi</b>');
  });

  it('file messages carry their attachment; text messages none', () => {
    const image = message('@alice:x', day1, {
      msgtype: 'm.image',
      body: 'gel.png',
      url: 'mxc://x/gel',
      info: { mimetype: 'image/png', size: 10, w: 4, h: 3 },
    });
    const text = message('@alice:x', day1, { msgtype: 'm.text', body: 'mxc://x/gel' });
    const [a, b] = timelineItems(null, [image, text]).filter((i) => i.kind === 'message');
    expect(a!.kind === 'message' && a!.attachment).toMatchObject({
      kind: 'image',
      name: 'gel.png',
      source: { mxc: 'mxc://x/gel', file: null },
    });
    expect(b!.kind === 'message' && b!.attachment).toBeNull();
  });

  it('membership changes read as sentences', () => {
    const join = new MatrixEvent({
      event_id: '$j',
      type: 'm.room.member',
      state_key: '@bob:x',
      sender: '@bob:x',
      origin_server_ts: day1,
      content: { membership: 'join', displayname: 'Bob' },
    });
    const kick = new MatrixEvent({
      event_id: '$k',
      type: 'm.room.member',
      state_key: '@bob:x',
      sender: '@alice:x',
      origin_server_ts: day1,
      content: { membership: 'leave' },
      unsigned: { prev_content: { membership: 'join' } },
    });
    const notices = timelineItems(null, [join, kick]).filter((i) => i.kind === 'notice');
    expect(notices.map((i) => i.kind === 'notice' && [i.message, i.params])).toEqual([
      ['joined', { name: 'Bob' }],
      ['kicked', { name: '@alice:x', target: '@bob:x' }],
    ]);
  });
});

describe('roles', () => {
  it('maps power levels to roles', () => {
    expect([100, 50, 0, 10, 150].map(roleOf)).toEqual(['admin', 'moderator', 'member', 'custom', 'admin']);
  });
});
