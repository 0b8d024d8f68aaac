// Traps (unreachable instruction): a runtime fault, not an exit code.
int main(void) {
    __builtin_trap();
}
