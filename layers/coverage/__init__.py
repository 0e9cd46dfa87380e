"""Coverage (服务覆盖): reach of facilities, the gap report, siting of new facilities, and its cache."""
