// Benchmark of the 'layer' composition (placeholder: being written).
#include "jetmoe/kernels.h"
int main() { return 0; }
