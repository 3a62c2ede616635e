"""The one masking rule for secrets in URLs and in messages quoting them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.redaction import has_credentials, mask_credentials


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("rtsp://user:pass@host/x", "rtsp://user:***@host/x"),
        ("rtsp://user:p@ss@host:554/x", "rtsp://user:***@host:554/x"),
        ("rtsp://user:@host/x", "rtsp://user:***@host/x"),
        ("rtsp://host:554/a@b", "rtsp://host:554/a@b"),
        ("rtsp://host:554/x", "rtsp://host:554/x"),
        ("http://cam/video.cgi?user=admin&pwd=12345&res=1",
         "http://cam/video.cgi?user=admin&pwd=***&res=1"),
        ("https://cam/x?Password=a&token=b#f", "https://cam/x?Password=***&token=***#f"),
        ("open failed: rtsp://a:b@h/1 and http://c:d@h/2",
         "open failed: rtsp://a:***@h/1 and http://c:***@h/2"),
        ("/dev/video0", "/dev/video0"),
        # Delimiters a user types unencoded: no client can use the URL, but the error
        # that says so quotes it, in the retained status.
        ("rtsp://admin:pa#ss@cam/live", "rtsp://admin:***@cam/live"),
        ("rtsp://admin:pa/ss@cam/live", "rtsp://admin:***@cam/live"),
        ("rtsp://admin:pa?ss@cam/live: 401", "rtsp://admin:***@cam/live: 401"),
        ("rtsp://ad min:pass word@cam/live", "rtsp://ad min:***@cam/live"),
        ("rtsp://u:pw@cam/live failed for user@x", "rtsp://u:***@cam/live failed for user@x"),
        # A user name alone is often an access token.
        ("https://ghp_abc123@github.com/o/r", "https://***@github.com/o/r"),
        # An "@" in a path after credentials: masked as a password would be.
        ("https://bob:s3cret@h.example/x@y", "https://bob:***@y"),
        # Pre-signed download URLs (S3, GCS, Azure SAS) carry their credential in the query.
        ("https://b.s3.amazonaws.com/m?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ab"
         "&X-Amz-Security-Token=zz&X-Amz-Expires=60",
         "https://b.s3.amazonaws.com/m?X-Amz-Credential=***&X-Amz-Signature=***"
         "&X-Amz-Security-Token=***&X-Amz-Expires=60"),
        ("https://s.googleapis.com/m?X-Goog-Signature=ab", "https://s.googleapis.com/m?X-Goog-Signature=***"),
        ("https://a.blob.core.windows.net/c/m?sv=2020&sig=abc%3D",
         "https://a.blob.core.windows.net/c/m?sv=2020&sig=***"),
        ("rtsp://cam/live failed: timeout", "rtsp://cam/live failed: timeout"),
    ],
)  # fmt: skip
def test_mask_credentials(text, masked):
    assert mask_credentials(text) == masked
    assert has_credentials(text) == (masked != text)


# Any password a user may type: "@", "/", "?", "#" unencoded, or spaces, which FFmpeg
# sends as written. (Not digits then a delimiter: "admin:12/x@" reads as a port; and not
# a space and a delimiter together.)
_PASSWORD_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"))
_SPACED_PASSWORD_CHARS = st.characters(
    blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"),
    blacklist_characters="/?#",
    whitelist_characters=" ",
)


@given(
    st.text(alphabet=_PASSWORD_CHARS, min_size=1).filter(lambda p: not p[0].isdigit())
    | st.text(alphabet=_SPACED_PASSWORD_CHARS, min_size=1)
)
def test_mask_hides_any_password(password):
    masked = mask_credentials(f"rtsp://admin:{password}@192.168.1.9:554/live")
    assert masked == "rtsp://admin:***@192.168.1.9:554/live"


def test_a_long_run_of_spaces_is_masked_in_linear_time():
    text = "rtsp://a:b" + " " * 200_000 + "x@cam/live"
    assert mask_credentials(text) == "rtsp://a:***@cam/live"
