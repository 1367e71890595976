// m.room.server_acl matching (client-server API: Server ACLs; appendices: Glob-style matching).
import t from 'tap';
import { globMatch, serverAllowedByAcl } from '../../src/protocol/server-acl.ts';

t.test('globMatch: * any run, ? one character, the rest literally', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['*', '', true],
    ['*', 'anything', true],
    ['', '', true],
    ['', 'a', false],
    ['abc', 'abc', true],
    ['abc', 'abcd', false],
    ['a?c', 'abc', true],
    ['a?c', 'ac', false],
    ['?', '', false],
    ['*.evil.com', 'a.evil.com', true],
    ['*.evil.com', 'evil.com', false],
    ['*evil.com', 'evil.com', true],
    ['*evil.com', 'notevil.com', true],
    ['evil.*', 'evil.com', true],
    ['a*b*c', 'abc', true],
    ['a*b*c', 'aXbYbZc', true],
    ['a*b*c', 'acb', false],
    ['ab*ba', 'aba', false],
    ['ab*ba', 'abba', true],
    ['*a?', 'xxab', true],
    ['*a?', 'xxba', false],
    ['**', 'x', true],
    ['.', 'a', false],
    ['[a]', 'a', false],
    ['[a]', '[a]', true],
  ];
  for (const [pattern, value, expected] of cases) {
    t.equal(globMatch(pattern, value), expected, `${JSON.stringify(pattern)} ~ ${JSON.stringify(value)}`);
  }
  const long = `${'*a'.repeat(50)}b`;
  const start = performance.now();
  t.notOk(globMatch(long, 'a'.repeat(5000)), 'a hostile pattern fails');
  t.ok(performance.now() - start < 1000, 'without exponential backtracking');
});

t.test('serverAllowedByAcl follows the order of the m.room.server_acl schema', async (t) => {
  t.ok(serverAllowedByAcl('evil.com', undefined), '1. no ACL event: allow');
  const acl = { allow: ['*'], deny: ['*.evil.com', 'evil.com'], allow_ip_literals: false };
  t.notOk(serverAllowedByAcl('1.2.3.4', acl), '2. IPv4 literal with allow_ip_literals false');
  t.notOk(serverAllowedByAcl('[::1]:8448', acl), '2. IPv6 literal too');
  t.ok(serverAllowedByAcl('1.2.3.4', { allow: ['*'] }), 'IP literals are allowed by default');
  t.ok(
    serverAllowedByAcl('1.2.3.4', { allow: ['*'], allow_ip_literals: 'no' }),
    'a non-boolean is the default',
  );
  t.notOk(serverAllowedByAcl('evil.com', acl), '3. deny');
  t.notOk(serverAllowedByAcl('a.b.evil.com:1234', acl), '3. the port is ignored');
  t.notOk(serverAllowedByAcl('EVIL.com', acl), '3. case-insensitively');
  t.ok(serverAllowedByAcl('good.org', acl), '4. allow');
  t.notOk(serverAllowedByAcl('good.org', { allow: ['*.good.org'] }), '5. otherwise deny');
  t.notOk(serverAllowedByAcl('good.org', {}), 'no allow list denies everyone');
  t.notOk(serverAllowedByAcl('good.org', { allow: 'good.org' }), 'allow that is not a list is empty');
  t.ok(serverAllowedByAcl('good.org', { allow: [5, 'GOOD.ORG'], deny: 'good.org' }), 'non-strings ignored');
  t.ok(serverAllowedByAcl('good.org:8448', { allow: ['good.org'] }), 'allowed with any port');
  t.notOk(serverAllowedByAcl('good.org', { allow: ['good.org:8448'] }), 'patterns with ports never match');
  t.notOk(serverAllowedByAcl('bad name', { allow: ['*'] }), 'an invalid server name is refused');
});
