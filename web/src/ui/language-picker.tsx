import { LANGUAGES, type Language, useI18n } from '../i18n/index.ts';

export function LanguagePicker() {
  const { language, setLanguage, t } = useI18n();
  return (
    <label className="language">
      <span>{t('language')}</span>
      <select value={language} onChange={(e) => setLanguage(e.target.value as Language)}>
        {(Object.keys(LANGUAGES) as Language[]).map((l) => (
          <option key={l} value={l} lang={l}>
            {LANGUAGES[l].name}
          </option>
        ))}
      </select>
    </label>
  );
}
