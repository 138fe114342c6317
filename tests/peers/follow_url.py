"""OAuth "browser" for tests: follow an authorization URL and its redirects like a browser would.

corrald runs it as its `oauth_opener` with the URL as the last argument. The test authorization
servers approve at once (302 to the redirect URI with the code), so following the redirects
delivers the code to corrald's callback listener. Writes one line to the file named by
$FOLLOW_URL_LOG (if set): the final status, never the URL (it carries the PKCE state).
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = sys.argv[-1]
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    log = os.environ.get("FOLLOW_URL_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{status}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
