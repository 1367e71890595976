import { describe, expect, it } from 'vitest';
import { en } from '../src/i18n/en.ts';
import { fr } from '../src/i18n/fr.ts';
import { pickLanguage, translator } from '../src/i18n/index.ts';

describe('i18n', () => {
  it('French has every English key, with the same placeholders', () => {
    expect(Object.keys(fr).sort()).toEqual(Object.keys(en).sort());
    for (const key of Object.keys(en) as (keyof typeof en)[]) {
      const names = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      expect(names(fr[key]), key).toEqual(names(en[key]));
    }
  });
  it('picks the saved language, else the browser one, else English', () => {
    expect(pickLanguage('fr', ['en-GB'])).toBe('fr');
    expect(pickLanguage(null, ['de-DE', 'fr-CA', 'en'])).toBe('fr');
    expect(pickLanguage(null, ['de', 'es'])).toBe('en');
    expect(pickLanguage('xx', [])).toBe('en');
  });
  it('fills placeholders and leaves unknown ones visible', () => {
    const t = translator('fr');
    expect(t('typingOne', { name: 'Bob' })).toBe('Bob écrit…');
    expect(t('typingOne')).toBe('{name} écrit…');
  });
});
