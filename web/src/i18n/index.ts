import { createContext, useContext } from 'react';
import { en, type MessageKey, type Messages } from './en.ts';
import { fr } from './fr.ts';

export type Language = 'en' | 'fr';
export const LANGUAGES: Record<Language, { name: string; messages: Messages }> = {
  en: { name: 'English', messages: en },
  fr: { name: 'Français', messages: fr },
};
const STORAGE_KEY = 'conclave.language';

/** The saved choice, else the first of the browser's languages that we have, else English. */
export function pickLanguage(saved: string | null, browser: readonly string[]): Language {
  if (saved === 'en' || saved === 'fr') return saved;
  for (const tag of browser) {
    const base = tag.toLowerCase().split('-')[0];
    if (base === 'en' || base === 'fr') return base;
  }
  return 'en';
}

export function initialLanguage(): Language {
  return pickLanguage(localStorage.getItem(STORAGE_KEY), navigator.languages ?? [navigator.language]);
}

export function saveLanguage(language: Language): void {
  localStorage.setItem(STORAGE_KEY, language);
}

export type Translate = (key: MessageKey, params?: Record<string, string | number>) => string;

/** Looks a message up and fills its {placeholders}. */
export function translator(language: Language): Translate {
  const messages = LANGUAGES[language].messages;
  return (key, params) =>
    messages[key].replace(/\{(\w+)\}/g, (whole, name: string) =>
      params && name in params ? String(params[name]) : whole,
    );
}

export const I18nContext = createContext<{
  language: Language;
  t: Translate;
  setLanguage(l: Language): void;
}>({
  language: 'en',
  t: translator('en'),
  setLanguage: () => {},
});

export function useI18n() {
  return useContext(I18nContext);
}
