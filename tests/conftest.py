"""Loads the test harness (pytest-realstack): the guard, the services, the fixtures. Installed,
its entry point has loaded it already and this line is a no-op; a copied realstack/ folder
loads here."""

pytest_plugins = ["realstack.plugin"]
