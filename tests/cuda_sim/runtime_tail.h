/* The simulated driver's launcher, put after the kernel source: runs one
   grid, block after block (in an order the seed varies), each block's
   threads on fibers that meet at __syncthreads. */
#include <ucontext.h>
#include <cstdlib>
#include <cstdio>
#include <vector>

extern "C" { sim_dim3 threadIdx, blockIdx, blockDim, gridDim; }

namespace {
typedef void (*sim_entry)(void**);
enum { RUNNING, AT_BARRIER, DONE };
const size_t STACK = 256 * 1024;

struct Fiber { ucontext_t ctx; int state; unsigned x, y, z; };

ucontext_t scheduler;
std::vector<Fiber> fibers;
std::vector<char*> stacks;
Fiber* current = nullptr;
sim_entry entry_now = nullptr;
void** args_now = nullptr;
unsigned long long rng_state = 1;

unsigned long long gcd(unsigned long long a, unsigned long long b) { while (b) { unsigned long long t = a % b; a = b; b = t; } return a; }

unsigned long long next_random() {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return rng_state;
}

void fiber_main() {
    entry_now(args_now);
    current->state = DONE;
    swapcontext(&current->ctx, &scheduler);
}

void resume(Fiber& f) {
    current = &f;
    threadIdx.x = f.x; threadIdx.y = f.y; threadIdx.z = f.z;
    f.state = RUNNING;
    swapcontext(&scheduler, &f.ctx);
}

/* Run one block; 0, or an error message in err. */
int run_block(size_t n, char* err, size_t errlen) {
    for (size_t t = 0; t < n; t++) {
        Fiber& f = fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stacks[t];
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_main, 0);
        f.x = t % blockDim.x; f.y = (t / blockDim.x) % blockDim.y; f.z = t / (blockDim.x * blockDim.y);
        f.state = RUNNING;
    }
    std::vector<size_t> order(n);
    for (size_t t = 0; t < n; t++) order[t] = t;
    for (int round = 0;; round++) {
        for (size_t k = 0; k < n; k++) resume(fibers[order[k]]);
        size_t done = 0, waiting = 0;
        for (size_t t = 0; t < n; t++) (fibers[t].state == DONE ? done : waiting)++;
        if (waiting == 0) return 0;
        if (done != 0) {
            snprintf(err, errlen, "__syncthreads() reached by %zu threads of block (%u, %u, %u) after %zu others "
                     "had returned (a barrier in divergent code: undefined behaviour in CUDA)",
                     waiting, blockIdx.x, blockIdx.y, blockIdx.z, done);
            return 1;
        }
        /* every thread is at the barrier: release them in another order */
        for (size_t k = n; k > 1; k--) std::swap(order[k - 1], order[next_random() % k]);
    }
}
}

extern "C" void sim_syncthreads(void) {
    current->state = AT_BARRIER;
    swapcontext(&current->ctx, &scheduler);
}

extern "C" int sim_launch(sim_entry entry, void** args, unsigned gx, unsigned gy, unsigned gz,
                          unsigned bx, unsigned by, unsigned bz, unsigned long long seed, char* err, size_t errlen) {
    size_t n = (size_t)bx * by * bz;
    while (stacks.size() < n) stacks.push_back((char*)malloc(STACK));
    if (fibers.size() < n) fibers.resize(n);
    entry_now = entry; args_now = args; rng_state = seed * 2654435761ULL + 0x9E3779B97F4A7C15ULL;
    blockDim.x = bx; blockDim.y = by; blockDim.z = bz;
    gridDim.x = gx; gridDim.y = gy; gridDim.z = gz;
    unsigned long long blocks = (unsigned long long)gx * gy * gz;
    /* blocks one after another, in the order b -> (b * step + offset) mod blocks (step coprime to blocks) */
    unsigned long long step = 1, offset = blocks ? next_random() % blocks : 0;
    if (blocks > 2) {
        step = next_random() % blocks;
        while (step == 0 || gcd(step, blocks) != 1) step = (step + 1) % blocks;
    }
    for (unsigned long long b = 0; b < blocks; b++) {
        unsigned long long id = (b * step + offset) % blocks;
        blockIdx.x = id % gx; blockIdx.y = (id / gx) % gy; blockIdx.z = id / ((unsigned long long)gx * gy);
        if (run_block(n, err, errlen)) return 1;
    }
    return 0;
}
