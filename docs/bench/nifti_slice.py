"""The slice reader the parity scripts share: a 2-D NIfTI slice as SimpleITK's array [ny, nx]."""
import gzip, struct
import numpy as np


def read(path):
    b = gzip.open(path).read() if path.endswith('.gz') else open(path, 'rb').read()
    dims = struct.unpack('<8h', b[40:56]); dt = struct.unpack('<h', b[70:72])[0]
    off = int(struct.unpack('<f', b[108:112])[0]); slope, inter = struct.unpack('<ff', b[112:120])
    typ = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 512: np.uint16}[dt]
    nx, ny = dims[1], dims[2]
    a = np.frombuffer(b, dtype=typ, count=nx * ny, offset=off).astype(np.float64)
    if slope != 0: a = a * slope + inter
    return a.reshape(ny, nx).astype(np.float32)
