"""pystac-client's item search with free text (``q``), which its 0.9 ``ItemSearch`` does not take."""

from __future__ import annotations

from typing import Any

from pystac_client import ItemSearch


class FreeTextItemSearch(ItemSearch):
    """An :class:`~pystac_client.ItemSearch` that also sends the free-text parameter ``q``.

    Args:
        url: the API's search endpoint.
        q: free text; a string for the advanced extension (``"a OR b"``), a list of terms for
            the basic one (any of them); None sends no ``q``.
        **kwargs: as for :class:`~pystac_client.ItemSearch`.
    """

    def __init__(self, url: str, *, q: str | list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.q = q

    def get_parameters(self) -> dict[str, Any]:
        """The request's parameters (body for POST, query for GET), with ``q`` when set."""
        params: dict[str, Any] = super().get_parameters()
        if not self.q:
            return params
        q = ",".join(self.q) if isinstance(self.q, list) and self.method == "GET" else self.q
        return {**params, "q": q}
