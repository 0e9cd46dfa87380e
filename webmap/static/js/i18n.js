/* The pages' language: t(msgid, params) translates a message with the catalogue the page
   embeds for its locale (<script id="messages">, built from the same .po as the server's) and
   fills in {named} parameters; gpLocale formats numbers and dates as the locale writes them. */
"use strict";
(function () {
  const node = document.getElementById("messages");
  const data = node ? JSON.parse(node.textContent) : { locale: "zh-CN", messages: {} };
  const messages = data.messages || {};
  const lang = data.locale || "zh-CN";

  function fill(text, params) {
    if (!params) return text;
    return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  }

  /* ``msgid`` in the page's language, with its {named} parameters filled in. */
  window.t = function (msgid, params) { return fill(messages[msgid] || msgid, params); };

  const plain = new Intl.NumberFormat(lang);
  window.gpLocale = {
    lang,
    /* a number with the locale's separators ("—" for none); digits: fixed digits after the point */
    number(n, digits) {
      if (n === null || n === undefined || n === "" || Number.isNaN(Number(n))) return "—";
      if (digits === undefined) return plain.format(Number(n));
      return new Intl.NumberFormat(lang, { minimumFractionDigits: digits, maximumFractionDigits: digits })
        .format(Number(n));
    },
    /* names one after another as the locale lists them: "、" between them in Chinese */
    list(items) {
      return items.join(lang.startsWith("zh") ? "、" : ", ");
    },
    /* a share 0…1 as a percentage */
    percent(x, digits) {
      if (x === null || x === undefined) return "—";
      const d = digits === undefined ? 1 : digits;
      return new Intl.NumberFormat(lang, { style: "percent", minimumFractionDigits: d, maximumFractionDigits: d })
        .format(Number(x));
    },
    /* a date and time (ISO text or Date) as the locale writes it; dateOnly: without the time */
    date(value, dateOnly) {
      if (!value) return "—";
      const day = typeof value === "string" && /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
      const d = value instanceof Date ? value : day ? new Date(+day[1], +day[2] - 1, +day[3]) : new Date(value);
      if (Number.isNaN(d.getTime())) return String(value);
      const opts = dateOnly ? { dateStyle: "medium" } : { dateStyle: "medium", timeStyle: "short" };
      return new Intl.DateTimeFormat(lang, opts).format(d);
    },
  };
})();
