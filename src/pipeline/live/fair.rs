//! The detector's queue of cameras with a frame waiting, least recently served first:
//! when the box is overloaded every camera still gets the same share of the detector. A
//! plain FIFO locks into the cameras' frame phases and starves some of them.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(super) struct FairQueue<T> {
    state: Mutex<State<T>>,
    available: Condvar,
}

struct State<T> {
    heap: BinaryHeap<Entry<T>>,
    arrivals: u64,
    closed: bool,
}

struct Entry<T> {
    /// (when the item was last served, arrival order): smallest first.
    key: (u64, u64),
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the greatest: reverse, so the smallest key comes first.
        other.key.cmp(&self.key)
    }
}

impl<T> FairQueue<T> {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                arrivals: 0,
                closed: false,
            }),
            available: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`, last served at `last_served` (a service sequence number; 0: never).
    pub fn push(&self, last_served: u64, item: T) {
        let mut state = self.lock();
        state.arrivals += 1;
        let key = (last_served, state.arrivals);
        state.heap.push(Entry { key, item });
        drop(state);
        self.available.notify_one();
    }

    /// No more items will come: waiting takers return what is left, then `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.available.notify_all();
    }

    pub fn len(&self) -> usize {
        self.lock().heap.len()
    }

    /// Blocks for the first item, then waits up to `max_wait` for the batch to fill to
    /// `max`. `None` once closed and empty.
    pub fn next_batch(&self, max: usize, max_wait: Duration) -> Option<Vec<T>> {
        let mut state = self.lock();
        while state.heap.is_empty() {
            if state.closed {
                return None;
            }
            state = self
                .available
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        let deadline = Instant::now() + max_wait;
        while state.heap.len() < max && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .available
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let take = state.heap.len().min(max);
        Some(
            (0..take)
                .filter_map(|_| state.heap.pop())
                .map(|e| e.item)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn least_recently_served_first_then_arrival_order() {
        let queue = FairQueue::new();
        queue.push(5, "served at 5");
        queue.push(0, "never served");
        queue.push(2, "served at 2, first");
        queue.push(2, "served at 2, second");
        let wait = Duration::from_millis(1);
        assert_eq!(queue.next_batch(1, wait), Some(vec!["never served"]));
        assert_eq!(
            queue.next_batch(2, wait),
            Some(vec!["served at 2, first", "served at 2, second"])
        );
        assert_eq!(queue.len(), 1);
        queue.close();
        assert_eq!(queue.next_batch(4, wait), Some(vec!["served at 5"]));
        assert_eq!(queue.next_batch(4, wait), None);
    }

    #[test]
    fn a_waiting_taker_wakes_for_a_push_and_for_close() {
        let queue = Arc::new(FairQueue::new());
        let taker = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let first = queue.next_batch(1, Duration::ZERO);
                let second = queue.next_batch(1, Duration::ZERO);
                (first, second)
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        queue.push(0, 7);
        std::thread::sleep(Duration::from_millis(20));
        queue.close();
        assert_eq!(taker.join().unwrap(), (Some(vec![7]), None));
    }
}
