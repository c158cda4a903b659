// The dashboard's refresh loop: every data-refresh ms, fetch the live region
// (data-live) and swap it in; a failed fetch marks the page stale (red dot)
// until one succeeds. The page's Content-Security-Policy admits this script
// by its hash, so it is inlined byte for byte as it stands in this file.
(() => {
  const body = document.body, ms = +body.dataset.refresh, url = body.dataset.live;
  const tick = async () => {
    try {
      const response = await fetch(url, {cache: 'no-store'});
      if (!response.ok) throw new Error(String(response.status));
      document.getElementById('live').innerHTML = await response.text();
      body.classList.remove('stale');
    } catch (e) {
      body.classList.add('stale');
    }
    setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
})();
