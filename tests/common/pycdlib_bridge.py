# A Windows-style UDF bridge made with pycdlib: README.TXT (the last argument's text) in the
# ISO9660 and UDF trees, everything else under SRC (directories, files, symlinks) in the UDF tree
# only, LABEL as the UDF volume label. Prints the ISO9660 root's names as pycdlib reads them back.
# Used by tests/common/udf.rs and fuzz/seed-udf.sh.
#
# Usage: python3 pycdlib_bridge.py SRC OUT LABEL README_TEXT
import io, json, os, sys
import pycdlib

src, out, label, readme = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].encode()

def dstring(s, n):
    # An OSTA CS0 d-string of n bytes: compression id, characters, zeros, length last.
    try:
        b = b'\x08' + s.encode('latin-1')
    except UnicodeEncodeError:
        b = b'\x10' + s.encode('utf-16-be')
    return b + b'\x00' * (n - 1 - len(b)) + bytes([len(b)])

iso = pycdlib.PyCdlib()
iso.new(udf='2.60', interchange_level=3, vol_ident='WINLIKE')
iso.add_fp(io.BytesIO(readme), len(readme), iso_path='/README.TXT;1', udf_path='/README.TXT')
links = []
for dirpath, dirs, files in os.walk(src):
    rel = os.path.relpath(dirpath, src)
    base = '' if rel == '.' else '/' + rel
    for name in sorted(dirs + files):
        path = os.path.join(dirpath, name)
        udf = base + '/' + name
        if os.path.islink(path):
            links.append((udf, os.readlink(path)))
        elif os.path.isdir(path):
            iso.add_directory(udf_path=udf)
        else:
            iso.add_file(path, udf_path=udf)
for udf, target in links:
    iso.add_symlink(udf_symlink_path=udf, udf_target=target)
for seq in (iso.udf_main_descs, iso.udf_reserve_descs):
    for lv in seq.logical_volumes:
        lv.logical_vol_ident = dstring(label, 128)
    for pvd in seq.pvds:
        pvd.vol_ident = dstring(label, 32)
iso.write(out)
iso.close()

check = pycdlib.PyCdlib()
check.open(out)
names = [c.file_identifier().decode() for c in check.list_children(iso_path='/')
         if not (c.is_dot() or c.is_dotdot())]
print(json.dumps(sorted(names)))
