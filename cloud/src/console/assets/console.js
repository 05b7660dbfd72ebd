// Tierline review console: keyboard shortcuts. Plain JavaScript, served by the cloud worker.
//   1-9  give the label on that button      n / p  next / previous frame      Enter  start the queue
"use strict";
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const button = document.querySelector(`form.review button[data-key="${event.key}"]`);
  if (button) {
    event.preventDefault();
    button.click();
    return;
  }
  const link = { n: "#next", p: "#previous", Enter: "a.start" }[event.key];
  const anchor = link && document.querySelector(link);
  if (anchor) {
    event.preventDefault();
    anchor.click();
  }
});
