"""flower_digits: a Flower / numpy app that trains on the 8x8 digits (see ../README.md)."""
