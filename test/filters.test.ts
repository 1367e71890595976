import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { SERVER_NAME, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';

/** The filter the spec's own example uploads, give or take. */
const syncFilter = {
  room: {
    state: { types: ['m.room.*'], not_rooms: [`!spam:${SERVER_NAME}`], lazy_load_members: true },
    timeline: {
      limit: 10,
      types: ['m.room.message'],
      not_rooms: [`!spam:${SERVER_NAME}`],
      not_senders: [`@spam:${SERVER_NAME}`],
      unread_thread_notifications: true,
    },
    ephemeral: { types: ['m.receipt', 'm.typing'] },
    include_leave: false,
  },
  presence: { types: ['m.presence'], not_senders: [`@alice:${SERVER_NAME}`] },
  account_data: { limit: 5 },
  event_format: 'client',
  event_fields: ['type', 'content', 'sender'],
};

for (const backend of databaseBackends()) {
  t.test(`filters on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const mallory = await s.register('mallory');
    const aliceId = encodeURIComponent(alice.user_id);
    const malloryId = encodeURIComponent(mallory.user_id);
    const upload = (body: unknown, token = alice.access_token, user = aliceId) =>
      s.request('POST', `${V3}/user/${user}/filter`, { token, body });
    const download = (filterId: string, token = alice.access_token, user = aliceId) =>
      s.request('GET', `${V3}/user/${user}/filter/${encodeURIComponent(filterId)}`, { token });

    t.test('alice uploads a filter and reads it back', async (t) => {
      const res = await upload(syncFilter);
      t.equal(res.statusCode, 200);
      const { filter_id } = res.json() as { filter_id: string };
      t.type(filter_id, 'string');
      t.ok(filter_id.length > 0 && filter_id.length <= 32, 'a short ID');
      t.notOk(filter_id.startsWith('{'), 'never looks like inline JSON');

      const got = await download(filter_id);
      t.equal(got.statusCode, 200);
      t.same(got.json(), syncFilter, 'the filter as uploaded');

      const again = await upload(syncFilter);
      t.equal(again.json().filter_id, filter_id, 'the same filter again gets the same ID');
      const other = await upload({ room: { timeline: { limit: 1 } } });
      t.equal(other.statusCode, 200);
      t.not(other.json().filter_id, filter_id, 'a different filter gets another ID');

      const empty = await upload({});
      t.equal(empty.statusCode, 200, 'the empty filter is a filter');
      t.same((await download(empty.json().filter_id)).json(), {});

      const extra = { room: { timeline: { limit: 2 } }, 'org.example.future': { x: 1 } };
      const withExtra = await upload(extra);
      t.equal(withExtra.statusCode, 200, 'unknown properties are accepted');
      t.same((await download(withExtra.json().filter_id)).json(), extra, 'and kept');
    });

    t.test('the filter service reads the /sync filter parameter', async (t) => {
      const { filters } = s.runtime.services;
      const id = (await upload({ room: { timeline: { limit: 7 } } })).json().filter_id as string;
      t.same(await filters.parseFilterParam(id, alice.user_id), { room: { timeline: { limit: 7 } } });
      t.same(await filters.parseFilterParam(undefined, alice.user_id), {});
      t.same(await filters.parseFilterParam('', alice.user_id), {});
      const view = await filters.syncFilter(alice.user_id, id, 20);
      t.equal(view.timelineLimit, 7, 'syncFilter digests a stored filter');
      t.equal((await filters.syncFilter(alice.user_id, undefined, 20)).timelineLimit, 20);
      t.same(await filters.parseFilterParam('{"room":{"include_leave":true}}', alice.user_id), {
        room: { include_leave: true },
      });
      for (const [raw, what] of [
        ['{"room":', 'JSON that does not parse'],
        ['{"room":{"timeline":{"limit":-1}}}', 'a negative limit'],
        ['{"room":{"timeline":{"limit":"10"}}}', 'a limit as a string'],
        ['{"n":9007199254740993}', 'an integer beyond 2^53'],
        ['nosuchfilter', 'an unknown filter ID'],
        [id, "someone else's filter ID"],
      ] as const) {
        const user = what === "someone else's filter ID" ? mallory.user_id : alice.user_id;
        const err = await filters.parseFilterParam(raw, user).then(
          () => undefined,
          (e: unknown) => e as { status?: number; errcode?: string },
        );
        t.equal(err?.status, 400, `${what}: 400`);
        t.equal(err?.errcode, 'M_INVALID_PARAM', `${what}: M_INVALID_PARAM`);
      }
    });

    t.test('mallory can neither read nor create the filters of alice', async (t) => {
      const { filter_id } = (await upload(syncFilter)).json() as { filter_id: string };
      const read = await download(filter_id, mallory.access_token);
      t.equal(read.statusCode, 403);
      t.equal(read.json().errcode, 'M_FORBIDDEN');
      t.notOk(read.body.includes('m.presence'), 'the refusal leaks nothing of the filter');
      const unknownRead = await download('nosuchfilter', mallory.access_token);
      t.equal(unknownRead.statusCode, 403, 'refused before looking, so existence is not revealed');

      const created = await upload({ room: { timeline: { limit: 1 } } }, mallory.access_token);
      t.equal(created.statusCode, 403);
      t.equal(created.json().errcode, 'M_FORBIDDEN');

      const ownPath = await download(filter_id, mallory.access_token, malloryId);
      t.equal(ownPath.statusCode, 404, "alice's filter ID means nothing under mallory's user ID");
      t.equal(ownPath.json().errcode, 'M_NOT_FOUND');

      const anonymous = await s.request('GET', `${V3}/user/${aliceId}/filter/${filter_id}`);
      t.equal(anonymous.statusCode, 401);
      t.equal(anonymous.json().errcode, 'M_MISSING_TOKEN');
    });

    t.test('malformed filters and unknown IDs', async (t) => {
      const bad: Array<[string, unknown]> = [
        ['an array', ['room']],
        ['a string', 'filter'],
        ['room not an object', { room: 'all' }],
        ['timeline not an object', { room: { timeline: [] } }],
        ['a negative limit', { room: { timeline: { limit: -5 } } }],
        ['a fractional limit', { room: { state: { limit: 2.5 } } }],
        ['a limit as a string', { room: { timeline: { limit: '10' } } }],
        ['types not an array', { room: { timeline: { types: 'm.room.message' } } }],
        ['a type not a string', { presence: { types: [1] } }],
        ['senders not user IDs', { room: { timeline: { senders: ['alice'] } } }],
        ['rooms not room IDs', { room: { rooms: ['#alias:conclave.test'] } }],
        ['not_rooms not an array', { room: { not_rooms: `!x:${SERVER_NAME}` } }],
        ['include_leave not a boolean', { room: { include_leave: 'true' } }],
        ['contains_url not a boolean', { room: { timeline: { contains_url: 1 } } }],
        ['lazy_load_members not a boolean', { room: { state: { lazy_load_members: 'yes' } } }],
        ['an unknown event_format', { event_format: 'xml' }],
        ['event_fields not an array', { event_fields: 'type' }],
        [
          'too many types',
          { room: { timeline: { types: Array.from({ length: 1001 }, (_, i) => `t${i}`) } } },
        ],
      ];
      for (const [what, body] of bad) {
        const res = await upload(body);
        t.equal(res.statusCode, 400, `${what}: 400`);
        t.equal(res.json().errcode, 'M_BAD_JSON', `${what}: M_BAD_JSON`);
      }
      const notJson = await s.request('POST', `${V3}/user/${aliceId}/filter`, {
        token: alice.access_token,
        rawBody: '{"room": ',
      });
      t.equal(notJson.statusCode, 400);
      t.equal(notJson.json().errcode, 'M_NOT_JSON');

      const badUser = await s.request('POST', `${V3}/user/not-a-user/filter`, {
        token: alice.access_token,
        body: {},
      });
      t.equal(badUser.statusCode, 400);
      t.equal(badUser.json().errcode, 'M_INVALID_PARAM');

      const unknown = await download('nosuchfilter');
      t.equal(unknown.statusCode, 404);
      t.equal(unknown.json().errcode, 'M_NOT_FOUND');
    });
  });
}
