// Shows our UTC timestamps (<time datetime="...Z">) in the reader's local time zone.
// The server renders them as UTC with a "UTC" mark, so pages read correctly without this.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  for (const el of document.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) continue;
    el.title = el.textContent;
    el.textContent = format.format(when);
  }
});
