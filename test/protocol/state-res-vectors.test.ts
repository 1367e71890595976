// State resolution against the ruma test vectors in fixtures/state-res (see its README and LICENSE):
// every batch resolved three ways (walking the DAG, file by file, all at once), and the MSC4297
// state-map cases under v2 (room version 11) and v2.1 (room version 12).
import { readFileSync } from 'node:fs';
import t from 'tap';
import { type RoomEvent, type StateTuple, stateTuple } from '../../src/protocol/event.ts';
import { ROOM_VERSIONS, type RoomVersion } from '../../src/protocol/room-versions.ts';
import { resolveState } from '../../src/protocol/state-res/index.ts';

const ROOT = new URL('./fixtures/state-res/', import.meta.url);

function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(new URL(path, ROOT), 'utf8')) as T;
}

/** The fixtures leave out depth, hashes and signatures, which these algorithms never read. */
function loadPdus(file: string): RoomEvent[] {
  return readJson<Array<Omit<RoomEvent, 'depth' | 'hashes' | 'signatures'>>>(`fixtures/${file}`).map(
    (pdu) => ({ depth: 0, hashes: { sha256: '' }, signatures: {}, ...pdu }),
  );
}

interface Entry {
  type: string;
  state_key: string;
  event_id: string;
}

function loadSnapshot(name: string): Entry[] {
  const text = readFileSync(new URL(`snapshots/${name}@resolved_state.snap`, ROOT), 'utf8');
  // The JSON follows the second `---` line of the header block.
  const body = text.split(/^---$/m).slice(2).join('---');
  return (JSON.parse(body) as Entry[]).map(({ type, state_key, event_id }) => ({
    type,
    state_key,
    event_id,
  }));
}

function entries(state: ReadonlyMap<StateTuple, string>): Entry[] {
  return [...state]
    .map(([key, event_id]) => {
      const [type = '', state_key = ''] = key.split('\u0000');
      return { type, state_key, event_id };
    })
    .sort((a, b) => (a.type === b.type ? (a.state_key < b.state_key ? -1 : 1) : a.type < b.type ? -1 : 1));
}

function single(event: RoomEvent): Map<StateTuple, string> {
  return new Map([[stateTuple(event.type, event.state_key!), event.event_id]]);
}

/** (a) Walk prev_events forward, resolving each PDU's state before from its prev_events; then the leaves. */
function resolveIteratively(rv: RoomVersion, pdus: RoomEvent[], events: Map<string, RoomEvent>) {
  const after = new Map<string, Map<StateTuple, string>>();
  const waiting = [...pdus];
  while (waiting.length > 0) {
    const index = waiting.findIndex((pdu) => pdu.prev_events.every((id) => after.has(id)));
    if (index === -1) throw new Error('prev_events form no DAG over the fixtures');
    const [pdu] = waiting.splice(index, 1) as [RoomEvent];
    const before =
      pdu.prev_events.length === 0
        ? new Map<StateTuple, string>()
        : resolveState(rv, { stateSets: pdu.prev_events.map((id) => after.get(id)!), events });
    after.set(pdu.event_id, new Map(before).set(stateTuple(pdu.type, pdu.state_key!), pdu.event_id));
  }
  const referenced = new Set(pdus.flatMap((pdu) => pdu.prev_events));
  const leaves = pdus.filter((pdu) => !referenced.has(pdu.event_id)).map((pdu) => after.get(pdu.event_id)!);
  return resolveState(rv, { stateSets: leaves, events });
}

const BATCHES: Record<string, string[]> = {
  minimal_private_chat: ['bootstrap-private-chat'],
  minimal_public_chat: ['bootstrap-public-chat'],
  origin_server_ts_tiebreak: ['bootstrap-private-chat', 'origin-server-ts-tiebreak'],
  ban_vs_power_levels: ['bootstrap-public-chat', 'ban-vs-power-levels-alice', 'ban-vs-power-levels-bob'],
  topic_vs_power_levels: [
    'bootstrap-public-chat',
    'topic-vs-power-levels-alice',
    'topic-vs-power-levels-bob',
  ],
  power_levels_admin_vs_mod: [
    'bootstrap-public-chat',
    'power-levels-admin-vs-mod-alice',
    'power-levels-admin-vs-mod-bob',
  ],
  topic_vs_ban: ['bootstrap-public-chat', 'topic-vs-ban-common', 'topic-vs-ban-alice', 'topic-vs-ban-bob'],
  join_rules_vs_join: [
    'bootstrap-public-chat',
    'join-rules-vs-join-common',
    'join-rules-vs-join-alice',
    'join-rules-vs-join-ella',
  ],
  concurrent_joins: ['bootstrap-public-chat', 'concurrent-joins-charlie', 'concurrent-joins-ella'],
};

for (const [name, files] of Object.entries(BATCHES)) {
  t.test(`batch ${name}`, async (t) => {
    const rv = ROOM_VERSIONS['10'];
    const byFile = files.map((file) => loadPdus(`${file}.json`));
    const pdus = byFile.flat();
    const events = new Map(pdus.map((pdu) => [pdu.event_id, pdu]));
    const expected = loadSnapshot(name);

    t.same(entries(resolveIteratively(rv, pdus, events)), expected, '(a) walking prev_events');

    let state: Map<StateTuple, string> | undefined;
    for (const filePdus of byFile) {
      const stateSets = [...(state ? [state] : []), ...filePdus.map(single)];
      state = resolveState(rv, { stateSets, events });
    }
    t.same(entries(state!), expected, '(b) file by file');

    t.same(entries(resolveState(rv, { stateSets: pdus.map(single), events })), expected, '(c) all at once');
  });
}

const STATE_MAP_CASES = [
  { name: 'msc4297_problem_a_state_res_v2_0', dir: 'MSC4297-problem-A', states: ['bob', 'charlie'], v: '11' },
  { name: 'msc4297_problem_a_state_res_v2_1', dir: 'MSC4297-problem-A', states: ['bob', 'charlie'], v: '12' },
  { name: 'msc4297_problem_b_state_res_v2_0', dir: 'MSC4297-problem-B', states: ['eve', 'zara'], v: '11' },
  { name: 'msc4297_problem_b_state_res_v2_1', dir: 'MSC4297-problem-B', states: ['eve', 'zara'], v: '12' },
] as const;

for (const { name, dir, states, v } of STATE_MAP_CASES) {
  t.test(`state maps ${name}`, async (t) => {
    const rv = ROOM_VERSIONS[v];
    const pdus = loadPdus(`${dir}/pdus-v${v}.json`);
    const events = new Map(pdus.map((pdu) => [pdu.event_id, pdu]));
    const stateSets = states.map((who) => {
      const ids = readJson<string[]>(`fixtures/${dir}/state-${who}.json`);
      return new Map(ids.map((id) => [stateTuple(events.get(id)!.type, events.get(id)!.state_key!), id]));
    });
    t.equal(rv.stateResolution, v === '12' ? 'v2.1' : 'v2');
    t.same(entries(resolveState(rv, { stateSets, events })), loadSnapshot(name));
  });
}
