# Sourced by the router benchmarks: chair_davis DIR lays the repo's 6 chair frames out as a
# one-sequence DAVIS dataset in DIR/DAVIS with DIR/labels.json naming the chair, for fit-aligner.
chair_davis() {
    local dir="$1"
    mkdir -p "$dir/DAVIS/JPEGImages/480p" "$dir/DAVIS/Annotations/480p" "$dir/DAVIS/ImageSets/2017"
    cp -r tests/data/chair/JPEGImages "$dir/DAVIS/JPEGImages/480p/chair"
    cp -r tests/data/chair/Annotations "$dir/DAVIS/Annotations/480p/chair"
    echo chair > "$dir/DAVIS/ImageSets/2017/val.txt"
    echo '{"chair/1": "a wooden chair"}' > "$dir/labels.json"
}
