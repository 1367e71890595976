import t from 'tap';
import {
  applyEventFields,
  effectiveLimit,
  eventMatchesFilter,
  type Filter,
  filterEvents,
  globMatches,
  includeLeave,
  lazyLoadMembers,
  MAX_EVENT_LIMIT,
  type RoomEventFilter,
  roomIncluded,
  splitPropertyPath,
  syncFilterView,
  timelineLimit,
} from '../src/services/filter-matching.ts';

const alice = '@alice:conclave.test';
const bob = '@bob:conclave.test';
const mallory = '@mallory:evil.example';
const lab = '!lab:conclave.test';
const lobby = '!lobby:conclave.test';

const message = (sender: string, room_id = lab, content: Record<string, unknown> = { body: 'hi' }) => ({
  type: 'm.room.message',
  sender,
  room_id,
  content,
});

t.test('glob matching', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['m.room.message', 'm.room.message', true],
    ['m.room.message', 'm.room.messages', false],
    ['m.room.*', 'm.room.message', true],
    ['m.room.*', 'm.room.', true],
    ['m.room.*', 'm.roomx', false],
    ['*', '', true],
    ['*', 'anything', true],
    ['', '', true],
    ['', 'x', false],
    ['m.*.member', 'm.room.member', true],
    ['m.*.member', 'm.room.topic', false],
    ['*.member', 'm.room.member', true],
    ['m.*e*r', 'm.room.member', true],
    ['**', 'x', true],
    ['a*b*c', 'aXbYc', true],
    ['a*b*c', 'aXbYd', false],
    ['m.room.?', 'm.room.x', false], // only `*` is special
    ['m.room.?', 'm.room.?', true],
  ];
  for (const [pattern, value, expected] of cases) {
    t.equal(globMatches(pattern, value), expected, `${JSON.stringify(pattern)} on ${JSON.stringify(value)}`);
  }
  // A pattern that makes backtracking regex engines explode finishes at once here.
  const start = performance.now();
  t.notOk(globMatches(`${'*a'.repeat(200)}b`, 'a'.repeat(5000)));
  t.ok(performance.now() - start < 2000, 'no catastrophic backtracking');
});

t.test('types and not_types', async (t) => {
  const m = message(alice);
  t.ok(eventMatchesFilter(undefined, m), 'no filter lets everything through');
  t.ok(eventMatchesFilter({}, m), 'an empty filter lets everything through');
  t.ok(eventMatchesFilter({ types: ['m.room.message'] }, m));
  t.ok(eventMatchesFilter({ types: ['m.room.*'] }, m), 'wildcard');
  t.notOk(eventMatchesFilter({ types: ['m.room.member'] }, m));
  t.notOk(eventMatchesFilter({ types: [] }, m), 'an empty types list lets nothing through');
  t.notOk(eventMatchesFilter({ not_types: ['m.room.message'] }, m));
  t.notOk(eventMatchesFilter({ not_types: ['*'] }, m));
  t.notOk(
    eventMatchesFilter({ types: ['m.room.*'], not_types: ['m.room.message'] }, m),
    'not_types wins over types',
  );
  t.ok(eventMatchesFilter({ not_types: [] }, m));
});

t.test('senders and not_senders', async (t) => {
  t.ok(eventMatchesFilter({ senders: [alice] }, message(alice)));
  t.notOk(eventMatchesFilter({ senders: [alice] }, message(bob)));
  t.notOk(eventMatchesFilter({ not_senders: [mallory] }, message(mallory)));
  t.ok(eventMatchesFilter({ not_senders: [mallory] }, message(bob)));
  t.notOk(eventMatchesFilter({ senders: [mallory], not_senders: [mallory] }, message(mallory)), 'not wins');
  t.notOk(eventMatchesFilter({ senders: ['@*'] }, message(alice)), 'senders are not globs');
  const typing = { type: 'm.typing', content: { user_ids: [bob] } };
  t.ok(eventMatchesFilter({ senders: [alice] }, typing), 'events without a sender are not judged by sender');
  t.ok(eventMatchesFilter({ not_senders: [alice] }, typing));
});

t.test('rooms and not_rooms', async (t) => {
  const f: RoomEventFilter = { rooms: [lab, lobby], not_rooms: [lobby] };
  t.ok(eventMatchesFilter(f, message(alice, lab)));
  t.notOk(eventMatchesFilter(f, message(alice, lobby)), 'not_rooms wins');
  t.notOk(eventMatchesFilter(f, message(alice, '!other:conclave.test')));
  const { room_id: _omitted, ...withoutRoom } = message(alice, lobby);
  t.ok(eventMatchesFilter(f, withoutRoom), 'an event without room_id is not judged by room');

  t.ok(roomIncluded(undefined, lab));
  t.ok(roomIncluded({}, lab));
  t.ok(roomIncluded({ rooms: [lab] }, lab));
  t.notOk(roomIncluded({ rooms: [lab] }, lobby));
  t.notOk(roomIncluded({ rooms: [] }, lab), 'an empty rooms list lets no room through');
  t.notOk(roomIncluded({ not_rooms: [lab] }, lab));
  t.notOk(roomIncluded({ rooms: [lab], not_rooms: [lab] }, lab));
});

t.test('contains_url', async (t) => {
  const image = message(alice, lab, { msgtype: 'm.image', body: 'x.png', url: 'mxc://conclave.test/abc' });
  const text = message(alice);
  t.ok(eventMatchesFilter({ contains_url: true }, image));
  t.notOk(eventMatchesFilter({ contains_url: true }, text));
  t.notOk(eventMatchesFilter({ contains_url: false }, image));
  t.ok(eventMatchesFilter({ contains_url: false }, text));
  t.notOk(
    eventMatchesFilter({ contains_url: true }, message(alice, lab, { url: 42 })),
    'a url that is not a string does not count',
  );
  t.notOk(eventMatchesFilter({ contains_url: true }, { type: 'm.x', content: null }));
  t.ok(eventMatchesFilter({}, image), 'ignored when absent');
});

t.test('filterEvents keeps order', async (t) => {
  const events = [message(alice), message(mallory), { ...message(bob), type: 'm.room.topic' }, message(bob)];
  const kept = filterEvents({ types: ['m.room.message'], not_senders: [mallory] }, events);
  t.same(
    kept.map((e) => e.sender),
    [alice, bob],
  );
  t.equal(filterEvents(undefined, events).length, 4);
});

t.test('limits', async (t) => {
  t.equal(effectiveLimit(undefined, 10), 10);
  t.equal(effectiveLimit(5, 10), 5);
  t.equal(effectiveLimit(1e9, 10), MAX_EVENT_LIMIT, 'capped');
  t.equal(effectiveLimit(0, 10), 0, 'zero asks for none');
  t.equal(effectiveLimit(-3, 10), 0);
  t.equal(effectiveLimit(50, 10, 20), 20, 'a caller may cap lower');
  const filter: Filter = { room: { timeline: { limit: 3 } } };
  t.equal(timelineLimit(filter, 20), 3);
  t.equal(timelineLimit({}, 20), 20);
  t.equal(timelineLimit(undefined, 20), 20);
  t.equal(timelineLimit({ room: { timeline: { limit: 5000 } } }, 20), MAX_EVENT_LIMIT);
  t.equal(includeLeave({ room: { include_leave: true } }), true);
  t.equal(includeLeave({}), false);
  t.equal(lazyLoadMembers({ lazy_load_members: true }), true);
  t.equal(lazyLoadMembers(undefined), false);
});

t.test('dot-separated property paths', async (t) => {
  t.same(splitPropertyPath('content.body'), ['content', 'body']);
  t.same(splitPropertyPath('content.m\\.relates_to'), ['content', 'm.relates_to']);
  t.same(splitPropertyPath('content.m\\\\foo'), ['content', 'm\\foo']);
  t.same(splitPropertyPath('content.a\\x'), ['content', 'a\\x'], 'other escapes stay as they are');
  t.same(splitPropertyPath('type'), ['type']);
});

t.test('event_fields', async (t) => {
  const event = {
    type: 'm.room.message',
    sender: alice,
    event_id: '$e',
    content: { body: 'hello', msgtype: 'm.text', 'm.relates_to': { rel_type: 'm.thread' } },
    unsigned: { age: 5 },
  };
  t.equal(applyEventFields(event, undefined), event, 'no event_fields: the event as it is');
  t.same(applyEventFields(event, ['type', 'content.body']), {
    type: 'm.room.message',
    content: { body: 'hello' },
  });
  t.same(applyEventFields(event, ['content.m\\.relates_to.rel_type']), {
    content: { 'm.relates_to': { rel_type: 'm.thread' } },
  });
  t.same(applyEventFields(event, ['content.nope', 'type.sub', 'missing']), {}, 'missing paths add nothing');
  t.same(applyEventFields(event, []), {});
  const copy = applyEventFields(event, ['content', 'content.body']) as { content: Record<string, unknown> };
  copy.content.body = 'changed';
  t.equal(event.content.body, 'hello', 'the result does not share objects with the event');
  const hostile = JSON.parse('{"type":"x","__proto__":{"polluted":true}}') as Record<string, unknown>;
  const projected = applyEventFields(hostile, ['__proto__.polluted']) as Record<string, unknown>;
  t.equal(Object.getPrototypeOf(projected), Object.prototype, 'no prototype is replaced');
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'nothing is polluted');
});

t.test('the view /sync takes', async (t) => {
  const view = syncFilterView(
    {
      room: {
        not_rooms: [lobby],
        include_leave: true,
        state: { lazy_load_members: true },
        timeline: { limit: 4, not_senders: [mallory] },
      },
    },
    10,
  );
  t.equal(view.timelineLimit, 4);
  t.equal(view.lazyLoadMembers, true);
  t.equal(view.includeLeave, true);
  t.ok(view.roomIncluded(lab));
  t.notOk(view.roomIncluded(lobby));
  t.ok(view.timelineMatches(message(alice)));
  t.notOk(view.timelineMatches(message(mallory)));
  const none = syncFilterView({}, 10);
  t.equal(none.timelineLimit, 10);
  t.equal(none.lazyLoadMembers, false);
  t.equal(none.includeLeave, false);
  t.ok(none.roomIncluded(lobby));
  t.ok(none.timelineMatches(message(mallory)));
});
