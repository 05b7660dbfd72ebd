// Tierline review console: keyboard shortcuts. Plain JavaScript, served by the cloud worker.
//   1-9  give the label on that button      n / p  next / previous frame      Enter  start the queue
// Keys act only when nothing interactive has the focus (typing a note, or Enter on a link or button, keeps
// its usual meaning), and a held key acts once.
"use strict";
document.addEventListener("keydown", (event) => {
  if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof Element && target.closest("a, button, input, textarea, select")) return;
  if (/^[1-9]$/.test(event.key)) {
    const button = document.querySelector(`form.review button[data-key="${event.key}"]`);
    if (button) {
      event.preventDefault();
      button.click();
    }
    return;
  }
  const link = { n: "#next", p: "#previous", Enter: "a.start" }[event.key];
  const anchor = link && document.querySelector(link);
  if (anchor) {
    event.preventDefault();
    anchor.click();
  }
});
