import DOMPurify from 'dompurify';
import { Marked } from 'marked';

/**
 * Markdown in, sanitised HTML out. Outgoing messages carry the text as `body` and, when the
 * Markdown made any formatting, `formatted_body` as org.matrix.custom.html. Incoming HTML is
 * never trusted: it is cleaned down to the tags and attributes below before it is shown.
 */

const ALLOWED_TAGS = [
  'a',
  'b',
  'blockquote',
  'br',
  'code',
  'del',
  'em',
  'h1',
  'h2',
  'h3',
  'h4',
  'h5',
  'h6',
  'hr',
  'i',
  'li',
  'ol',
  'p',
  'pre',
  's',
  'span',
  'strong',
  'sub',
  'sup',
  'table',
  'tbody',
  'td',
  'th',
  'thead',
  'tr',
  'u',
  'ul',
];
const ALLOWED_ATTR = ['href', 'title', 'class', 'start'];

const marked = new Marked({ gfm: true, breaks: true, async: false });
// Raw HTML typed into a message is shown as text, not interpreted.
marked.use({
  renderer: {
    html: ({ text }) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;'),
  },
});

let hooked = false;
function purifier() {
  if (!hooked) {
    // Links open in a new tab without giving it a handle on this one.
    DOMPurify.addHook('afterSanitizeAttributes', (node) => {
      if (node.tagName === 'A') {
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer nofollow');
      }
    });
    hooked = true;
  }
  return DOMPurify;
}

export function sanitizeHtml(html: string): string {
  return purifier().sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR: [...ALLOWED_ATTR, 'target', 'rel'],
    ALLOWED_URI_REGEXP: /^(?:https?|mailto|matrix):/i,
  });
}

export function markdownToHtml(text: string): string {
  return sanitizeHtml(marked.parse(text) as string).trim();
}

const PLAIN = /^<p>([^<>&]*)<\/p>$/;

export interface TextContent {
  msgtype: 'm.text';
  body: string;
  format?: 'org.matrix.custom.html';
  formatted_body?: string;
}

export function messageContent(text: string): TextContent {
  const body = text.trim();
  const html = markdownToHtml(body);
  const plain = PLAIN.exec(html);
  if (html === '' || (plain && plain[1] === body)) return { msgtype: 'm.text', body };
  return { msgtype: 'm.text', body, format: 'org.matrix.custom.html', formatted_body: html };
}
