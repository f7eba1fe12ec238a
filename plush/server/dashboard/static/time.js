// Show epoch-second timestamps (<time data-epoch>) in the viewer's local time.
"use strict";
function plushTime(epoch) {
  const d = new Date(epoch * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}
for (const el of document.querySelectorAll("time[data-epoch]")) {
  const epoch = Number(el.dataset.epoch);
  if (epoch) { el.textContent = plushTime(epoch); el.dateTime = new Date(epoch * 1000).toISOString(); }
}
