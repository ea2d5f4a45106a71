// run_cxx: C++ exceptions thrown through several frames and caught, plus iostreams. The
// unwinder walks the loaded objects (dl_iterate_phdr) and libstdc++ allocates and prints;
// all of it must work with every syscall going through a trampoline.
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct Tracker {
    static int live;
    std::string name;
    explicit Tracker(std::string n) : name(std::move(n)) { ++live; }
    ~Tracker() { --live; }
};
int Tracker::live = 0;

static int depth(int n) {
    Tracker t("frame " + std::to_string(n));
    if (n == 0)
        throw std::runtime_error("bottom reached");
    return depth(n - 1) + 1;
}

int main() {
    int caught = 0;
    for (int i = 0; i < 5; i++) {
        try {
            depth(10 + i);
        } catch (const std::runtime_error &e) {
            caught++;
            std::cout << "caught: " << e.what() << " (live trackers: " << Tracker::live << ")\n";
        }
    }
    try {
        std::vector<int> v(3);
        (void)v.at(10);
    } catch (const std::out_of_range &) {
        std::cout << "caught out_of_range\n";
        caught++;
    }
    auto p = std::make_unique<std::string>("unique");
    std::cerr << "stderr line from C++\n";
    std::cout << "caught " << caught << " exceptions, " << *p << "\n";
    return caught == 6 ? 0 : 1;
}
