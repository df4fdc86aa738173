"""Drives a running Agora with the client openapi-python-client generated
from its /openapi.json, so the generated models must parse real answers.

    python_client_smoke.py GENERATED_PARENT_DIR PACKAGE BASE_URL

Exits non-zero, saying what differed, if any call does not parse into the
model the document promises.
"""

import importlib
import sys
import uuid


def main(parent: str, package: str, base_url: str) -> None:
    sys.path.insert(0, parent)
    client_module = importlib.import_module(package)
    api = lambda tag, op: importlib.import_module(f"{package}.api.{tag}.{op}")  # noqa: E731
    models = importlib.import_module(f"{package}.models")

    # AuthenticatedClient, since the document asks a bearer token of most
    # operations; the server under test runs without auth.
    client = client_module.AuthenticatedClient(base_url=base_url, token="unused")

    written = api("users", "register_user").sync(
        client=client,
        body=models.RegisterUser(email=f"{uuid.uuid4().hex}@example.com", name="Ada"),
    )
    assert isinstance(written, models.UserWritten), written
    assert written.version == 1, written

    price = models.CreateProductPrice(
        amount=1999, currency=models.CreateProductPriceCurrency.EUR
    )
    product = api("products", "create_product").sync(
        client=client,
        body=models.CreateProduct(
            sku=f"PY-{uuid.uuid4().hex[:8]}", name="Pen", price=price, stock=3
        ),
    )
    assert isinstance(product, models.ProductWritten), product
    adjusted = api("products", "adjust_stock").sync(
        uuid.UUID(product.id), client=client, body=models.AdjustStock(delta=2)
    )
    assert isinstance(adjusted, models.ProductWritten), adjusted
    assert adjusted.version == 2, adjusted

    missing = api("users", "get_user").sync(uuid.uuid4(), client=client)
    assert isinstance(missing, models.Problem), missing
    assert missing.status == 404 and missing.type_ == "/problems/not-found", missing

    invalid = api("users", "register_user").sync(
        client=client, body=models.RegisterUser(email="not an email", name="Ada")
    )
    assert isinstance(invalid, models.Problem), invalid
    assert invalid.status == 422 and invalid.errors, invalid

    health = api("operations", "healthz").sync(client=client)
    assert isinstance(health, models.Health), health
    print("ok")


if __name__ == "__main__":
    main(*sys.argv[1:4])
