"""Grid cells (网格): every community divided into cells of whole planning units."""
