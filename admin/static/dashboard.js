// cronguard dashboard: confirmations before state changes, and a live
// refresh of the page's [data-refresh] region. The Content-Security-Policy
// allows no inline script: this file is all the script there is, and every
// page works without it (forms post, links link).
(function () {
  'use strict';

  // Confirm a form that asks for it (data-confirm) before it posts.
  document.addEventListener('submit', function (ev) {
    var msg = ev.target.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) {
      ev.preventDefault();
    }
  });

  var live = document.getElementById('live');
  if (!live) {
    return;
  }
  var every = (Number(live.getAttribute('data-refresh')) || 5) * 1000;
  var toggle = document.getElementById('autorefresh');
  if (toggle) {
    toggle.parentNode.hidden = false;
  }

  // busy: the person is in the region (focus on a link, a field, an open
  // form) or has typed something: do not pull the page from under them.
  function busy() {
    if (live.contains(document.activeElement) || live.querySelector('details[open]')) {
      return true;
    }
    var fields = live.querySelectorAll('input[type=text]');
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== '') {
        return true;
      }
    }
    return false;
  }

  function refresh() {
    if (document.hidden || (toggle && !toggle.checked) || busy()) {
      return Promise.resolve();
    }
    return fetch(window.location.href, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (res) {
        if (res.redirected) { // signed out or expired: show the sign-in form
          window.location.reload();
          return;
        }
        if (!res.ok) {
          return;
        }
        return res.text().then(function (html) {
          var fresh = new DOMParser().parseFromString(html, 'text/html').getElementById('live');
          if (fresh && !busy()) {
            live.replaceWith(document.adoptNode(fresh));
            live = fresh;
          }
        });
      })
      .catch(function () { /* offline for a moment: try again later */ });
  }

  function loop() {
    window.setTimeout(function () { refresh().then(loop); }, every);
  }
  loop();
})();
