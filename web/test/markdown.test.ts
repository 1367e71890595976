// @vitest-environment jsdom
import { describe, expect, it } from 'vitest';
import { messageContent, sanitizeHtml } from '../src/matrix/markdown.ts';

describe('Markdown out', () => {
  it('plain text stays plain', () => {
    expect(messageContent('hello bob')).toEqual({ msgtype: 'm.text', body: 'hello bob' });
  });
  it('formatting becomes org.matrix.custom.html', () => {
    const c = messageContent('**bold** and `code`');
    expect(c.body).toBe('**bold** and `code`');
    expect(c.format).toBe('org.matrix.custom.html');
    expect(c.formatted_body).toBe('<p><strong>bold</strong> and <code>code</code></p>');
  });
  it('HTML typed in a message is escaped, not interpreted', () => {
    const c = messageContent('<img src=x onerror=alert(1)> hi');
    expect(c.formatted_body ?? '').not.toMatch(/<img/);
    expect(c.formatted_body ?? c.body).toMatch(/&lt;img|<img/);
  });
  it('links are kept but not javascript: ones', () => {
    expect(messageContent('[a](https://example.org)').formatted_body).toMatch(
      /<a href="https:\/\/example.org" target="_blank" rel="noopener noreferrer nofollow">a<\/a>/,
    );
    expect(messageContent('[a](javascript:alert(1))').formatted_body ?? '').not.toMatch(/javascript:/);
  });
});

describe('HTML in', () => {
  it('drops scripts, handlers, styles and unknown tags', () => {
    const html = sanitizeHtml(
      '<p onclick="x()">hi<script>alert(1)</script><iframe src="https://e"></iframe><b style="color:red">b</b></p>',
    );
    expect(html).toBe('<p>hi<b>b</b></p>');
  });
  it('keeps the formatting Matrix clients send', () => {
    expect(
      sanitizeHtml('<blockquote><p>q</p></blockquote><pre><code class="language-ts">x</code></pre>'),
    ).toBe('<blockquote><p>q</p></blockquote><pre><code class="language-ts">x</code></pre>');
  });
});
