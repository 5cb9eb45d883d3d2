"""Data-set readers: MVTec layout (also MPDD), VisA, ELPV, the demo product."""
