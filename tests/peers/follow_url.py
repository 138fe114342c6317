"""OAuth "browser" for tests: follow an authorization URL and its redirects like a browser would.

corrald runs it as its `oauth_opener` with the URL as the last argument. The test authorization
servers approve at once (302 to the redirect URI with the code), so following the redirects
delivers the code to corrald's callback listener. Writes one line to the file named by
$FOLLOW_URL_LOG (if set): the final status, never the URL (it carries the PKCE state). With
$FOLLOW_URL_CODE_FILE set, the authorization code it carried to the callback is written there, so
that a test can check the code never reaches corrald's log.
"""

import os
import sys
import urllib.error
import urllib.parse
import urllib.request


class RecordCode(urllib.request.HTTPRedirectHandler):
    """Follows redirects like the default handler, noting the `code` of the one to the callback."""

    code: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 (urllib's signature)
        codes = urllib.parse.parse_qs(urllib.parse.urlsplit(newurl).query).get("code")
        if codes:
            RecordCode.code = codes[0]
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def main() -> int:
    url = sys.argv[-1]
    opener = urllib.request.build_opener(RecordCode)
    try:
        with opener.open(url, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    log = os.environ.get("FOLLOW_URL_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{status}\n")
    code_file = os.environ.get("FOLLOW_URL_CODE_FILE")
    if code_file and RecordCode.code:
        with open(code_file, "w", encoding="utf-8") as out:
            out.write(RecordCode.code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
